import { QueryClientProvider } from "@tanstack/react-query";
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { RouterProvider } from "react-router";
import "@/index.css";
import { ChromeProvider } from "@/components/layout/chrome";
import { TooltipProvider } from "@/components/ui/misc";
import { ToastProvider } from "@/components/ui/toast";
import { AuthProvider } from "@/lib/auth";
import { LiveProvider } from "@/lib/live-react";
import { createQueryClient } from "@/lib/query";
import { ThemeProvider } from "@/lib/theme";
import { createRouter } from "@/routes";

const queryClient = createQueryClient();
const router = createRouter();

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <QueryClientProvider client={queryClient}>
      <ThemeProvider>
        <AuthProvider>
          <LiveProvider>
            <TooltipProvider delayDuration={300}>
              <ToastProvider>
                <ChromeProvider>
                  <RouterProvider router={router} />
                </ChromeProvider>
              </ToastProvider>
            </TooltipProvider>
          </LiveProvider>
        </AuthProvider>
      </ThemeProvider>
    </QueryClientProvider>
  </StrictMode>,
);

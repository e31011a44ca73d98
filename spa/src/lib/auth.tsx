// React view of the session: who is signed in, their roles, sign-in and sign-out.
import { useQueryClient } from "@tanstack/react-query";
import * as React from "react";
import {
  type Claims,
  getSession,
  isOperator,
  isTenantAdmin,
  isTenantUser,
  login as loginRequest,
  logout as dropSession,
  onSessionChange,
  type Session,
} from "@/lib/session";

interface AuthValue {
  session: Session | null;
  claims: Claims | undefined;
  isOperator: boolean;
  isTenantUser: boolean;
  isTenantAdmin: boolean;
  login: (email: string, password: string) => Promise<Session>;
  logout: () => void;
}

const AuthContext = React.createContext<AuthValue | null>(null);

export function AuthProvider({ children }: { children: React.ReactNode }) {
  const [session, setSession] = React.useState<Session | null>(getSession());
  const queryClient = useQueryClient();
  React.useEffect(
    () =>
      onSessionChange((s) => {
        setSession(s);
        if (!s) queryClient.clear();
      }),
    [queryClient],
  );
  const value = React.useMemo<AuthValue>(() => {
    const claims = session?.claims;
    return {
      session,
      claims,
      isOperator: isOperator(claims),
      isTenantUser: isTenantUser(claims),
      isTenantAdmin: isTenantAdmin(claims),
      login: loginRequest,
      logout: dropSession,
    };
  }, [session]);
  return <AuthContext.Provider value={value}>{children}</AuthContext.Provider>;
}

export function useAuth(): AuthValue {
  const value = React.useContext(AuthContext);
  if (!value) throw new Error("useAuth outside AuthProvider");
  return value;
}

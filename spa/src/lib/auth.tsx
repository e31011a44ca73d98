// React view of the session: how this Pulse signs people in, who is signed in, their roles, sign-in and sign-out.
import { useQueryClient } from "@tanstack/react-query";
import * as React from "react";
import { ErrorState, Loading } from "@/components/states";
import {
  type Claims,
  getSession,
  isOperator,
  isTenantAdmin,
  isTenantUser,
  login as loginRequest,
  logout as endSession,
  onSessionChange,
  type Session,
} from "@/lib/session";
import { fetchSignInConfig, type SignInConfig } from "@/lib/signin";

interface AuthValue {
  session: Session | null;
  claims: Claims | undefined;
  isOperator: boolean;
  isTenantUser: boolean;
  isTenantAdmin: boolean;
  /** How people sign in here: the built-in form, single sign-on at an OIDC provider, or not at all. */
  signIn: SignInConfig;
  login: (email: string, password: string) => Promise<Session>;
  logout: () => Promise<void>;
}

const AuthContext = React.createContext<AuthValue | null>(null);

async function configure(config: SignInConfig): Promise<SignInConfig> {
  // The OIDC client library loads only where single sign-on is set up.
  if (config.method === "oidc") (await import("@/lib/oidc")).startOidc(config.oidc);
  return config;
}

/** Provides the session; renders its children once it knows how this Pulse signs in (`signIn` skips asking). */
export function AuthProvider({ children, signIn: given }: { children: React.ReactNode; signIn?: SignInConfig }) {
  const [session, setSession] = React.useState<Session | null>(getSession());
  const [signIn, setSignIn] = React.useState<SignInConfig | undefined>(undefined);
  const [error, setError] = React.useState<unknown>(null);
  const queryClient = useQueryClient();
  React.useEffect(
    () =>
      onSessionChange((s) => {
        setSession(s);
        if (!s) queryClient.clear();
      }),
    [queryClient],
  );
  const load = React.useCallback(() => {
    setError(null);
    (given ? Promise.resolve(given) : fetchSignInConfig()).then(configure).then(setSignIn, setError);
  }, [given]);
  React.useEffect(load, [load]);
  const value = React.useMemo<AuthValue | null>(() => {
    if (!signIn) return null;
    const claims = session?.claims;
    return {
      session,
      claims,
      isOperator: isOperator(claims),
      isTenantUser: isTenantUser(claims),
      isTenantAdmin: isTenantAdmin(claims),
      signIn,
      login: loginRequest,
      logout: endSession,
    };
  }, [session, signIn]);
  if (!value) return error ? <ErrorState error={error} onRetry={load} /> : <Loading label="Starting Pulse…" />;
  return <AuthContext.Provider value={value}>{children}</AuthContext.Provider>;
}

export function useAuth(): AuthValue {
  const value = React.useContext(AuthContext);
  if (!value) throw new Error("useAuth outside AuthProvider");
  return value;
}

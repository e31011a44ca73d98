import { Activity, Loader2, LogIn } from "lucide-react";
import * as React from "react";
import { Navigate, useLocation, useNavigate } from "react-router";
import { Button } from "@/components/ui/button";
import { Card, CardContent, CardDescription, CardHeader } from "@/components/ui/card";
import { Input } from "@/components/ui/input";
import { Field } from "@/components/ui/label";
import { useAuth } from "@/lib/auth";
import { homeFor } from "@/routes";

function ErrorLine({ error }: { error: string | null }) {
  if (!error) return null;
  return (
    <p role="alert" className="rounded-md border border-destructive/50 bg-destructive/10 p-2 text-sm text-destructive">
      {error}
    </p>
  );
}

function PasswordForm({ from }: { from?: string }) {
  const { login } = useAuth();
  const navigate = useNavigate();
  const [email, setEmail] = React.useState("");
  const [password, setPassword] = React.useState("");
  const [error, setError] = React.useState<string | null>(null);
  const [busy, setBusy] = React.useState(false);

  async function submit(event: React.FormEvent) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const s = await login(email.trim(), password);
      navigate(from ?? homeFor(s.claims), { replace: true });
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  }

  return (
    <form className="grid gap-4" onSubmit={submit} noValidate>
      <Field label="Email" htmlFor="email">
        <Input
          id="email"
          type="email"
          autoComplete="username"
          required
          autoFocus
          value={email}
          onChange={(e) => setEmail(e.target.value)}
        />
      </Field>
      <Field label="Password" htmlFor="password">
        <Input
          id="password"
          type="password"
          autoComplete="current-password"
          required
          value={password}
          onChange={(e) => setPassword(e.target.value)}
        />
      </Field>
      <ErrorLine error={error} />
      <Button type="submit" disabled={busy || !email || !password}>
        {busy && <Loader2 className="animate-spin" />}
        Sign in
      </Button>
    </form>
  );
}

function SingleSignOn({ from }: { from?: string }) {
  const [error, setError] = React.useState<string | null>(null);
  const [busy, setBusy] = React.useState(false);
  React.useEffect(() => {
    void import("@/lib/oidc").then(({ completeSignOut }) => completeSignOut());
  }, []);

  async function start() {
    setBusy(true);
    setError(null);
    try {
      const { beginSignIn } = await import("@/lib/oidc");
      await beginSignIn(from); // navigates to the identity provider
    } catch (err) {
      setError((err as Error).message);
      setBusy(false);
    }
  }

  return (
    <div className="grid gap-4">
      <p className="text-sm text-muted-foreground">Your organization signs you in to Pulse with its own account.</p>
      <ErrorLine error={error} />
      <Button type="button" onClick={start} disabled={busy} autoFocus>
        {busy ? <Loader2 className="animate-spin" /> : <LogIn />}
        Sign in with SSO
      </Button>
    </div>
  );
}

export default function Login() {
  const { session, signIn } = useAuth();
  const location = useLocation();
  const from = (location.state as { from?: string } | null)?.from;

  if (session) return <Navigate to={from ?? homeFor(session.claims)} replace />;

  return (
    <div className="flex min-h-full items-center justify-center p-4">
      <Card className="w-full max-w-sm">
        <CardHeader className="items-center gap-2 pt-6">
          <Activity className="size-8 text-primary" aria-hidden="true" />
          <h1 className="text-lg font-semibold">Sign in to Pulse</h1>
          <CardDescription>Fleet operations and on-call</CardDescription>
        </CardHeader>
        <CardContent>
          {signIn.method === "password" && <PasswordForm from={from} />}
          {signIn.method === "oidc" && <SingleSignOn from={from} />}
          {signIn.method === "none" && (
            <p role="alert" className="text-sm text-muted-foreground">
              This Pulse accepts sign-ins from an identity provider, but the web app has no client there yet. An
              administrator sets one with PULSE_OIDC_CLIENT_ID.
            </p>
          )}
        </CardContent>
      </Card>
    </div>
  );
}

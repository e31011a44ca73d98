import * as React from "react";
import { Link, useNavigate } from "react-router";
import { ErrorState, Loading } from "@/components/states";
import { completeSignIn } from "@/lib/oidc";
import { homeFor } from "@/routes";

/** Where the identity provider sends the browser back after signing in (/app/auth/callback?code=…&state=…). */
export default function AuthCallback() {
  const navigate = useNavigate();
  const [error, setError] = React.useState<unknown>(null);
  React.useEffect(() => {
    completeSignIn(window.location.href).then(
      ({ session, from }) => navigate(from ?? homeFor(session.claims), { replace: true }),
      setError,
    );
  }, [navigate]);
  if (!error) return <Loading label="Signing you in…" />;
  return (
    <div className="grid justify-items-center gap-2 p-8">
      <ErrorState error={error} />
      <Link to="/login" className="text-sm underline">
        Back to sign-in
      </Link>
    </div>
  );
}

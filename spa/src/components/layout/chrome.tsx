// Whether the app's chrome (navigation, top bar) shows; the NOC's TV mode hides it.
import * as React from "react";

const ChromeContext = React.createContext<{ chromeless: boolean; setChromeless: (v: boolean) => void }>({
  chromeless: false,
  setChromeless: () => {},
});

export function ChromeProvider({ children }: { children: React.ReactNode }) {
  const [chromeless, setChromeless] = React.useState(false);
  const value = React.useMemo(() => ({ chromeless, setChromeless }), [chromeless]);
  return <ChromeContext.Provider value={value}>{children}</ChromeContext.Provider>;
}

export function useChrome() {
  return React.useContext(ChromeContext);
}

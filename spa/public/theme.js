// Applies the saved (or system) colour theme before the first paint, so the page does not flash.
(function () {
  try {
    var saved = localStorage.getItem("pulse.theme");
    var dark = saved ? saved === "dark" : window.matchMedia("(prefers-color-scheme: dark)").matches;
    document.documentElement.classList.toggle("dark", dark);
  } catch (e) {
    document.documentElement.classList.add("dark");
  }
})();

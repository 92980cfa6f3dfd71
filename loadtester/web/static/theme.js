// Loaded (blocking, not a module) in <head> so the page is painted in the right theme at once.
// The choice is kept in localStorage; without one the system's prefers-color-scheme decides.
(function () {
  var theme = null;
  try { theme = localStorage.getItem("loadtester-theme"); } catch (e) { /* storage blocked */ }
  if (theme !== "light" && theme !== "dark") {
    theme = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light";
  }
  document.documentElement.setAttribute("data-theme", theme);
})();

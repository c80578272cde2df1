// Refresh the view in place: fetch this page's <main> (?fragment=1) every data-refresh seconds and
// swap it in. Without JavaScript the page is whole as served; this only keeps it current.
"use strict";
(() => {
  const main = document.getElementById("view");
  const stamp = document.getElementById("refreshed");
  if (!main || !main.dataset.refresh) return;
  const seconds = Number(main.dataset.refresh);
  const url = new URL(window.location.href);
  url.searchParams.set("fragment", "1");
  let busy = false;
  async function refresh() {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const answer = await fetch(url, { headers: { Accept: "text/html" } });
      if (answer.ok) {
        main.innerHTML = await answer.text();
        if (stamp) stamp.textContent = `updated ${new Date().toISOString().slice(0, 19).replace("T", " ")} UTC`;
      }
    } catch (_) {
      // the gateway restarting: the next tick tries again
    } finally {
      busy = false;
    }
  }
  setInterval(refresh, seconds * 1000);
})();

// The dashboard's only script: re-fetch the server-rendered panels every few seconds, keep
// the spend chart (Chart.js) in step with them, and send the failures panel's Retry clicks
// (a document: a new run with fresh calls; a dead job of no document: requeued).
(function () {
  "use strict";
  const root = document.getElementById("dashboard");
  const panels = document.getElementById("panels");
  const live = document.getElementById("live");
  const refreshMs = Number(root.dataset.refreshMs) || 2000;
  const palette = ["#2563eb", "#16a34a", "#d97706", "#dc2626", "#7c3aed", "#0891b2", "#db2777"];
  let chart = null;

  function spendData() {
    const el = document.getElementById("spend-data");
    return el ? JSON.parse(el.textContent) : { days: [], models: [], series: {} };
  }

  function drawChart() {
    const data = spendData();
    const datasets = data.models.map((model, i) => ({
      label: model,
      data: data.series[model],
      backgroundColor: palette[i % palette.length],
    }));
    if (chart === null) {
      chart = new Chart(document.getElementById("spend-chart"), {
        type: "bar",
        data: { labels: data.days, datasets: datasets },
        options: {
          animation: false,
          maintainAspectRatio: false,
          scales: {
            x: { stacked: true },
            // min 0: with no spend yet Chart.js would centre the axis on $0 (-1 to 1)
            y: { stacked: true, beginAtZero: true, min: 0, ticks: { callback: (v) => "$" + v } },
          },
          plugins: { legend: { position: "bottom" } },
        },
      });
    } else {
      chart.data.labels = data.days;
      chart.data.datasets = datasets;
      chart.update();
    }
  }

  async function refresh() {
    try {
      const response = await fetch("/dashboard/panels", { credentials: "same-origin" });
      if (response.status === 401) {
        window.location.assign("/login");
        return;
      }
      if (!response.ok) throw new Error("HTTP " + response.status);
      panels.innerHTML = await response.text();
      drawChart();
      live.classList.remove("stale");
      live.textContent = "live";
    } catch (err) {
      live.classList.add("stale");
      live.textContent = "offline: " + err.message;
    }
  }

  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-retry], button[data-retry-document]");
    if (!button) return;
    button.disabled = true;
    button.textContent = "Retrying…";
    // A document: a new run with fresh calls; a dead job of no document: requeued.
    const response = button.dataset.retryDocument
      ? await fetch("/dashboard/batches/" + encodeURIComponent(button.dataset.retryBatch) + "/retry", {
          method: "POST",
          credentials: "same-origin",
          headers: { "X-Pipeline-Action": "retry", "Content-Type": "application/json" },
          body: JSON.stringify({ document_ids: [button.dataset.retryDocument] }),
        })
      : await fetch("/dashboard/jobs/" + encodeURIComponent(button.dataset.retry) + "/retry", {
          method: "POST",
          credentials: "same-origin",
          headers: { "X-Pipeline-Action": "retry" },
        });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      button.textContent = "Failed";
      button.title = body.detail || "HTTP " + response.status;
    }
    refresh();
  });

  drawChart();
  setInterval(refresh, refreshMs);
})();

// Live pages: the server sends the page's body as a server-sent event whenever it changes.
(function () {
  var main = document.getElementById("live");
  var state = document.getElementById("live-state");
  if (!main || !main.dataset.stream || !window.EventSource) { if (state) state.textContent = "static"; return; }
  var source = new EventSource(main.dataset.stream);
  source.onmessage = function (event) {
    main.innerHTML = event.data;
    main.dataset.updates = String(Number(main.dataset.updates || 0) + 1);
  };
  source.onopen = function () { if (state) { state.textContent = "live"; state.className = ""; } };
  source.onerror = function () { if (state) { state.textContent = "reconnecting"; state.className = "bad"; } };
})();

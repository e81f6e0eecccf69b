// History page: reload while any job is still queued or running, so statuses stay current.
"use strict";
(function () {
  const running = document.querySelector("tr[data-status=queued], tr[data-status=decoding], tr[data-status=transcribing], tr[data-status=engraving]");
  if (running) setTimeout(() => location.reload(), 3000);
})();

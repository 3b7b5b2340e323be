// Try-it forms: call the gateway from the page, as the signed-in member (a short-lived try-it token), the way any
// OpenAI-compatible client would; chat answers stream in as they are generated.
(() => {
  const form = document.querySelector("form[data-try-it]");
  if (!form) return;
  const output = document.querySelector("[data-try-it-output]");
  const usage = document.querySelector("[data-try-it-usage]");
  const button = form.querySelector("button[type=submit]");
  const { gateway, token, model, modality } = form.dataset;
  const headers = {
    Authorization: `Bearer ${token}`,
    "Content-Type": "application/json",
    "Accept-Language": document.documentElement.lang,
  };

  const showError = (body) => {
    output.classList.add("text-danger");
    output.textContent = (body && body.error && body.error.message) || form.dataset.failedLabel;
  };

  const showUsage = (tokens) => {
    if (tokens) usage.textContent = `${tokens.prompt_tokens} → ${tokens.completion_tokens ?? 0} tokens`;
  };

  async function embed(text) {
    const response = await fetch(`${gateway}/embeddings`, {
      method: "POST", headers, body: JSON.stringify({ model, input: text }),
    });
    const body = await response.json();
    if (!response.ok) return showError(body);
    const vector = body.data[0].embedding;
    output.textContent = `[${vector.slice(0, 8).map((x) => x.toFixed(4)).join(", ")}, …] (${vector.length})`;
    showUsage(body.usage);
  }

  async function chat(text) {
    const response = await fetch(`${gateway}/chat/completions`, {
      method: "POST",
      headers,
      body: JSON.stringify({
        model, messages: [{ role: "user", content: text }], stream: true, stream_options: { include_usage: true },
      }),
    });
    if (!response.ok) return showError(await response.json());
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let pending = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      pending += value;
      const events = pending.split("\n\n");
      pending = events.pop();
      for (const event of events) {
        const data = event.replace(/^data: ?/, "").trim();
        if (!data || data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) return showError(chunk);
        for (const choice of chunk.choices || []) output.textContent += choice.delta.content || "";
        showUsage(chunk.usage);
      }
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = form.querySelector("textarea").value.trim();
    if (!text) return;
    output.classList.remove("text-danger");
    output.textContent = usage.textContent = "";
    button.disabled = true;
    try {
      await (modality === "embeddings" ? embed(text) : chat(text));
    } catch (error) {
      showError(null);
    } finally {
      button.disabled = false;
      form.dispatchEvent(new CustomEvent("try-it:done", { bubbles: true }));
    }
  });
})();

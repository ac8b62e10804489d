// Draws the ```mermaid blocks of the pages as diagrams when mermaid can be loaded (online);
// offline they stay readable as text.
document.addEventListener("DOMContentLoaded", () => {
  const blocks = document.querySelectorAll("pre > code.language-mermaid");
  if (!blocks.length) return;
  blocks.forEach((code) => {
    const div = document.createElement("div");
    div.className = "mermaid";
    div.textContent = code.textContent;
    code.parentElement.replaceWith(div);
  });
  import("https://cdn.jsdelivr.net/npm/mermaid@11/dist/mermaid.esm.min.mjs")
    .then(({ default: mermaid }) => mermaid.run({ querySelector: ".mermaid" }))
    .catch(() => {
      document.querySelectorAll("div.mermaid").forEach((div) => {
        const pre = document.createElement("pre");
        pre.textContent = div.textContent;
        div.replaceWith(pre);
      });
    });
});

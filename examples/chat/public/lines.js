// Lists of lines made of styled parts: the chat page's log, and the panes of
// examples/demo (whose public/lines.js links here).
"use strict";

/**
 * Appends to `list` an item of `[text, className]` parts (set as text, never
 * as HTML) and returns it. A list scrolled to its bottom stays there; one
 * scrolled up to read stays where it is.
 */
function appendLine(list, parts, className) {
  const item = document.createElement("li");
  if (className) item.className = className;
  for (const [text, cls] of parts) {
    const span = document.createElement("span");
    span.textContent = text;
    if (cls) span.className = cls;
    item.append(span);
  }
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(item);
  if (atBottom) list.scrollTop = list.scrollHeight;
  return item;
}

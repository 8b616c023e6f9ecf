// Parley Studio's only script: the editor's line gutter follows the text, and clicking a turn of a
// call's timeline plays that turn's caller audio.
document.addEventListener("DOMContentLoaded", () => {
  const text = document.getElementById("yaml");
  const gutter = document.querySelector(".gutter");
  if (text && gutter) {
    const bad = new Set([...gutter.querySelectorAll("li.bad")].map((li) => li.textContent));
    const redraw = () => {
      const lines = text.value.split("\n").length;
      gutter.innerHTML = "";
      for (let i = 1; i <= lines; i++) {
        const li = document.createElement("li");
        li.id = "L" + i; li.textContent = i;
        if (bad.has(String(i))) li.className = "bad";
        gutter.appendChild(li);
      }
      text.rows = Math.max(lines + 1, 10);
    };
    text.addEventListener("input", redraw);
    redraw();
  }
  document.querySelectorAll(".turn").forEach((turn) => {
    turn.addEventListener("click", (event) => {
      const audio = turn.querySelector("audio");
      if (!audio || event.target.tagName === "AUDIO") return;
      document.querySelectorAll(".turn.playing").forEach((t) => t.classList.remove("playing"));
      turn.classList.add("playing");
      audio.currentTime = 0;
      audio.play();
    });
  });
});

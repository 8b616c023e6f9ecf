// Parley browser call: microphone -> WebRTC (offer POSTed as JSON) -> the agent; what the agent hears
// and does arrives on the "parley" data channel. No framework, no CDN.
"use strict";

(() => {
  const root = document.getElementById("call");
  const $ = (id) => document.getElementById(id);
  const callButton = $("call-button");
  const hangupButton = $("hangup-button");
  const state = {
    // read by tests and by anyone debugging in the console
    status: "idle", callId: null, maxLevel: 0, loudFrames: 0, events: [], error: null, endedBy: null, keys: [],
  };
  window.parleyCall = state;
  let pc = null, channel = null, local = null, audioContext = null, meterTimer = null;

  function setStatus(text, status) {
    $("status").textContent = text;
    if (status) state.status = status;
  }

  function showError(text) {
    state.error = text;
    const box = $("error");
    box.textContent = text;
    box.hidden = false;
  }

  function addLine(who, text, meta) {
    const item = document.createElement("li");
    item.className = who;
    item.textContent = (who === "agent" ? "Agent: " : "You: ") + text;
    if (meta) {
      const span = document.createElement("span");
      span.className = "meta";
      span.textContent = " — " + meta;
      item.appendChild(span);
    }
    $("transcript").appendChild(item);
  }

  function showSlots(slots) {
    const body = $("slots").querySelector("tbody");
    body.replaceChildren();
    for (const [name, value] of Object.entries(slots)) {
      const row = body.insertRow();
      row.insertCell().textContent = name;
      row.insertCell().textContent = typeof value === "object" ? JSON.stringify(value) : String(value);
    }
  }

  function onEvent(event) {
    state.events.push(event);
    if (event.type === "partial") {
      $("partial").textContent = "… " + event.text;
    } else if (event.type === "prompt") {
      addLine("agent", event.text);
    } else if (event.type === "turn") {
      $("partial").textContent = "";
      const heard = event.input === "speech" ? (event.transcript || "(nothing understood)")
        : event.input === "dtmf" ? "[keys] " + (event.transcript || "")
        : "[" + (event.input || "no input") + "]";
      const meta = [];
      if (event.engine) meta.push(event.engine);
      if (event.confidence != null) meta.push("confidence " + event.confidence.toFixed(2));
      if (event.latency_ms != null) meta.push("turn latency " + Math.round(event.latency_ms) + " ms");
      if (event.result) meta.push(event.result);
      addLine("caller", heard, meta.join(" · "));
    } else if (event.type === "slots") {
      showSlots(event.slots);
    } else if (event.type === "hangup") {
      ended("The agent hung up.", "agent");
    }
  }

  function extraFields() {
    const fields = {};
    for (const input of document.querySelectorAll("[data-offer-field]")) {
      fields[input.dataset.offerField] = input.value;
    }
    return fields;
  }

  function gatheringDone(peer, timeoutMs) {
    if (peer.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      peer.addEventListener("icegatheringstatechange", () => {
        if (peer.iceGatheringState === "complete") { clearTimeout(timer); resolve(); }
      });
    });
  }

  function listenTo(stream) {
    const audio = new Audio();
    audio.srcObject = stream;  // Chromium plays remote WebRTC audio into WebAudio only when it is sunk
    audio.play().catch(() => {});
    audioContext = new AudioContext();
    const analyser = audioContext.createAnalyser();
    analyser.fftSize = 2048;
    audioContext.createMediaStreamSource(stream).connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    meterTimer = setInterval(() => {
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const s of samples) sum += s * s;
      const rms = Math.sqrt(sum / samples.length);
      $("level").value = rms;
      state.maxLevel = Math.max(state.maxLevel, rms);
      if (rms > 0.01) state.loudFrames += 1;
    }, 50);
  }

  async function start() {
    callButton.disabled = true;
    $("error").hidden = true;
    state.error = null;
    state.endedBy = null;
    $("transcript").replaceChildren();
    setStatus("Connecting…", "connecting");
    try {
      local = await navigator.mediaDevices.getUserMedia({ audio: true });
      pc = new RTCPeerConnection();
      for (const track of local.getTracks()) pc.addTrack(track, local);
      channel = pc.createDataChannel("parley");
      channel.onmessage = (message) => onEvent(JSON.parse(message.data));
      pc.ontrack = (event) => listenTo(event.streams[0] || new MediaStream([event.track]));
      pc.onconnectionstatechange = () => {
        if (!pc) return;
        if (pc.connectionState === "connected") {
          setStatus("In call.", "in-call");
          hangupButton.disabled = false;
        } else if (pc.connectionState === "failed") {
          ended("The connection failed.", "network");
        }
      };
      await pc.setLocalDescription(await pc.createOffer());
      await gatheringDone(pc, 3000);
      const headers = { "Content-Type": "application/json" };
      if (root.dataset.csrfToken) headers["X-CSRF-Token"] = root.dataset.csrfToken;
      const response = await fetch(root.dataset.offerUrl, {
        method: "POST",
        headers,
        credentials: "same-origin",
        body: JSON.stringify({ type: "offer", sdp: pc.localDescription.sdp, ...extraFields() }),
      });
      const body = await response.json().catch(() => ({ error: "The server's answer was not JSON." }));
      if (!response.ok) {
        showError(body.error || ("The call was refused (" + response.status + ")."));
        ended("Call refused.", "refused");
        return;
      }
      state.callId = body.call_id;
      await pc.setRemoteDescription({ type: "answer", sdp: body.sdp });
    } catch (error) {
      showError("Could not start the call: " + error.message);
      ended("Not connected.", "error");
    }
  }

  function hangup() {
    if (channel && channel.readyState === "open") channel.send(JSON.stringify({ type: "hangup" }));
    setTimeout(() => ended("You hung up.", "caller"), 200);
  }

  function ended(text, by) {
    if (state.status === "ended") return;
    state.endedBy = by;
    setStatus(text, "ended");
    clearInterval(meterTimer);
    if (pc) pc.close();
    if (local) for (const track of local.getTracks()) track.stop();
    if (audioContext) audioContext.close();
    pc = channel = local = audioContext = null;
    callButton.disabled = false;
    hangupButton.disabled = true;
  }

  function sendKey(key) {
    // RFC 4733 telephone-events, as a phone sends them, when the answer accepted them; else the data channel
    const sender = pc && pc.getSenders().find((s) => s.track && s.track.kind === "audio");
    if (sender && sender.dtmf && sender.dtmf.canInsertDTMF) {
      sender.dtmf.insertDTMF(sender.dtmf.toneBuffer + key, 100, 70);  // queued after any still playing
      state.keys.push({ key, via: "rfc4733" });
    } else if (channel && channel.readyState === "open") {
      channel.send(JSON.stringify({ type: "dtmf", digit: key }));
      state.keys.push({ key, via: "datachannel" });
    }
  }

  for (const key of "123456789*0#") {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = key;
    button.addEventListener("click", () => sendKey(key));
    $("keypad").appendChild(button);
  }
  callButton.addEventListener("click", start);
  hangupButton.addEventListener("click", hangup);
})();

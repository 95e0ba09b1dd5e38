// The supervisor's live dashboard (dashboard.html.j2). Served from /static: the
// Content-Security-Policy allows no inline script.
"use strict";
// Every value from the server is put into the page with textContent, never as HTML.
const initial = JSON.parse(document.getElementById("initial").textContent);
const csrf = document.querySelector('meta[name="csrf-token"]').content;
const labels = initial.labels;
const calls = new Map();
const alertsById = new Map();

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}
function clock(s) {
  if (s === null || s === undefined) return "—";
  const m = Math.floor(s / 60);
  return String(m).padStart(2, "0") + ":" + (s - 60 * m).toFixed(1).padStart(4, "0");
}
function callLink(callId) {
  const a = el("a", "mono", callId);
  a.href = "/calls/" + encodeURIComponent(callId);
  return a;
}

// --- live calls ---
function drawCall(call) {
  let entry = calls.get(call.call_id);
  if (!entry) {
    const box = el("div", "live-call");
    box.dataset.callId = call.call_id;
    const top = el("div", "top");
    top.append(el("span", "tag live", "● 通话中"), el("b", "mono", call.call_id),
               el("span", "muted small", "坐席 " + (call.agent_id || "未知") + " · " + call.phrasebook));
    const count = el("span", "tag none count", "");
    top.append(count);
    const lines = el("div", "lines");
    box.append(top, lines);
    document.getElementById("calls").prepend(box);
    entry = {box, lines, count, partial: null, alerts: 0};
    calls.set(call.call_id, entry);
  }
  entry.alerts = call.alerts || 0;
  entry.lines.replaceChildren();
  for (const line of call.lines || []) addLine(call.call_id, line, false);
  if (call.partial) addLine(call.call_id, call.partial, true);
  updateCall(entry);
  updateCounts();
  return entry;
}
function updateCall(entry) {
  entry.count.textContent = entry.alerts ? entry.alerts + " 条告警" : "无告警";
  entry.count.className = "tag count " + (entry.alerts ? "critical" : "none");
  entry.box.classList.toggle("alerting", entry.alerts > 0);
}
function addLine(callId, line, partial) {
  const entry = calls.get(callId);
  if (!entry) return;
  if (entry.partial) { entry.partial.remove(); entry.partial = null; }
  const row = el("div", "line" + (partial ? " partial" : ""));
  row.dataset.start = line.start;
  row.append(el("span", "muted mono", clock(line.start)), el("span", "who", ""), el("span", "text", line.text));
  setSpeaker(row, line.speaker);
  entry.lines.append(row);
  if (partial) entry.partial = row;
  while (entry.lines.children.length > 40) entry.lines.firstChild.remove();
  entry.lines.scrollTop = entry.lines.scrollHeight;
}
function setSpeaker(row, speaker) {
  row.classList.toggle("customer", speaker === "customer");
  row.classList.toggle("agent", speaker !== "customer");
  row.querySelector(".who").textContent = speaker === "customer" ? "客户" : "坐席";
}
function relabel(event) {
  // Later speech told the two voices of a mono call apart: earlier lines get their new speaker.
  const entry = calls.get(event.call_id);
  if (!entry) return;
  for (const row of entry.lines.children) {
    const seg = event.segments.find(s => Math.abs(s.start - Number(row.dataset.start)) < 0.01);
    if (seg) setSpeaker(row, seg.speaker);
  }
}
function endCall(event) {
  const entry = calls.get(event.call_id);
  if (!entry) return;
  entry.box.remove();
  calls.delete(event.call_id);
  updateCounts();
}

// --- alerts ---
function drawAlert(alert, fresh) {
  if (alertsById.has(alert.id)) return;
  const severity = alert.severity || "minor";
  const box = el("div", "alert " + severity + (fresh ? " fresh" : "") + (alert.acknowledged ? " acked" : ""));
  box.dataset.alertId = alert.id;
  const row = el("div", "row");
  row.append(el("span", "tag " + severity, labels[severity] || severity), callLink(alert.call_id),
             el("span", "muted small", "坐席 " + (initial.names[alert.agent_id] || alert.agent_id || "未知") + " · " + clock(alert.start) + " · " + (alert.article || "")));
  // Supervisors acknowledge; every reviewer (qa too) may mark a false alarm, with why.
  const ack = el("button", "ack", alert.acknowledged ? "已确认" : "确认");
  ack.disabled = !!alert.acknowledged;
  ack.addEventListener("click", () => acknowledge(alert.id));
  if (initial.may_ack) row.append(ack);
  const falseAlarm = el("button", "ack false-alarm", "");
  falseAlarm.addEventListener("click", () => markFalseAlarm(alert.id));
  row.append(falseAlarm);
  box.append(row, el("div", "phrase", "“" + alert.canonical + "”"), el("div", "muted small", "听到：" + alert.heard));
  // A mono call's alert raised before the two voices could be told apart: the supervisor checks who said it.
  if (alert.uncertain_speaker) box.append(el("div", "doubt small", "说话人待确认（单声道，尚未区分坐席与客户）"));
  if (alert.pass === 2) box.append(el("div", "muted small", "复核识别时听到"));
  document.getElementById("alerts").prepend(box);
  alertsById.set(alert.id, {alert, box, ack, falseAlarm});
  showFalseAlarm(alert.id, alert.false_alarm, alert.false_alarm_by);
  if (alert.retracted) showRetracted(alert.id, alert.retracted_heard, alert.retracted_reason);
  updateCounts();
}
function showRetracted(id, heardAgain, reason) {
  const entry = alertsById.get(id);
  if (!entry || entry.alert.retracted_shown) return;
  entry.alert.retracted = entry.alert.retracted_shown = true;
  entry.box.classList.add("retracted");
  entry.box.classList.remove("fresh");
  const why = reason === "customer" ? "已撤回，判定为客户所说：" : reason === "guarded" ? "已撤回，后文为礼貌协助：" : "复核后撤回，复核听到：";
  entry.box.append(el("div", "muted small", why + (heardAgain || "")));
  updateCounts();
}
function markAcked(id, by) {
  const entry = alertsById.get(id);
  if (!entry) return;
  entry.alert.acknowledged = true;
  entry.box.classList.add("acked");
  entry.box.classList.remove("fresh");
  entry.ack.textContent = "已确认" + (by ? "（" + by + "）" : "");
  entry.ack.disabled = true;
  updateCounts();
}
async function acknowledge(id) {
  const response = await fetch("/alerts/" + id + "/ack", {method: "POST", headers: {"X-CSRF-Token": csrf}});
  if (response.ok) markAcked(id);
}
function showFalseAlarm(id, marked, by) {
  const entry = alertsById.get(id);
  if (!entry) return;
  entry.alert.false_alarm = marked;
  entry.falseAlarm.textContent = marked ? "已标记误报" + (by ? "（" + by + "）" : "") : "误报";
  entry.falseAlarm.disabled = !!marked;
  entry.box.classList.toggle("false-alarm", !!marked);
}
async function markFalseAlarm(id) {
  const note = window.prompt("标记为误报：请说明原因（将记入复核记录）");
  if (note === null) return;
  const response = await fetch("/api/alerts/" + id + "/false-alarm", {
    method: "POST", headers: {"X-CSRF-Token": csrf, "Content-Type": "application/json"}, body: JSON.stringify({note}),
  });
  if (response.ok) { const alert = await response.json(); showFalseAlarm(id, true, alert.false_alarm_by); }
}
function updateCounts() {
  const open = [...alertsById.values()].filter(e => !e.alert.acknowledged && !e.alert.retracted).length;
  document.getElementById("open-count").textContent = open;
  document.getElementById("no-alerts").style.display = alertsById.size ? "none" : "block";
  document.getElementById("live-count").textContent = calls.size;
  document.getElementById("no-calls").style.display = calls.size ? "none" : "block";
}

// Sound by severity: two high beeps for critical, one for major, none for minor.
let audio = null;
function beep(severity) {
  const times = {critical: 2, major: 1}[severity] || 0;
  if (!times) return;
  try {
    audio = audio || new AudioContext();
    for (let i = 0; i < times; i++) {
      const osc = audio.createOscillator(), gain = audio.createGain();
      osc.frequency.value = severity === "critical" ? 880 : 660;
      gain.gain.value = 0.08;
      osc.connect(gain).connect(audio.destination);
      osc.start(audio.currentTime + i * 0.3);
      osc.stop(audio.currentTime + i * 0.3 + 0.18);
    }
  } catch (e) { /* no audio device or not allowed yet: the visual emphasis remains */ }
}
function banner(alert) {
  if (alert.severity !== "critical") return;
  const node = document.getElementById("banner");
  node.textContent = "严重禁语：“" + alert.canonical + "” — 通话 " + alert.call_id + "，坐席 " + (alert.agent_id || "未知");
  node.classList.add("show");
  clearTimeout(banner.timer);
  banner.timer = setTimeout(() => node.classList.remove("show"), 8000);
}

// --- the event stream ---
function setStatus(state, text) {
  const node = document.getElementById("status");
  node.className = "status " + state;
  node.lastElementChild.textContent = text;
}
function connect() {
  // EventSource reconnects by itself and sends Last-Event-ID (the last alert id it saw),
  // so the server replays whatever alerts were raised while the connection was down.
  const source = new EventSource("/events?after=" + initial.after);
  source.onopen = async () => {
    setStatus("on", "已连接");
    const response = await fetch("/api/live");
    if (!response.ok) return;
    const live = await response.json();
    for (const [id, entry] of calls) if (!live.some(c => c.call_id === id)) endCall({call_id: id});
    for (const call of live) drawCall(call);
  };
  source.onerror = () => setStatus("off", "连接中断，正在重连…");
  source.onmessage = (message) => {
    const event = JSON.parse(message.data);
    if (event.type === "alert") {
      if (!alertsById.has(event.id)) { drawAlert(event, true); beep(event.severity); banner(event); }
      const entry = calls.get(event.call_id);
      if (entry) { entry.alerts += 1; updateCall(entry); }
    } else if (event.type === "call_started") drawCall(event);
    else if (event.type === "segment") addLine(event.call_id, event, false);
    else if (event.type === "partial") addLine(event.call_id, event, true);
    else if (event.type === "revised") drawCall(event.call);
    else if (event.type === "retracted") showRetracted(event.id, event.heard_again, event.reason);
    else if (event.type === "speakers") relabel(event);
    else if (event.type === "call_ended") endCall(event);
    else if (event.type === "ack") markAcked(event.id, event.by);
    else if (event.type === "false_alarm") showFalseAlarm(event.id, true, event.by);
  };
}
for (const alert of initial.alerts.slice().reverse()) drawAlert(alert, false);
for (const call of initial.calls) drawCall(call);
updateCounts();
connect();

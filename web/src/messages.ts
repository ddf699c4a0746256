// The one message catalogue of the front end: every label the screens show comes from here.
// zh-CN first; English is the switch. Keys are the same in both; `t()` falls back to zh-CN.
import { ref } from "vue";

export type Locale = "zh-CN" | "en";

const zh = {
  appName: "网格卫士",
  wallTitle: "网格卫士 · 指挥中心",
  phoneTitle: "网格员工作台",
  login: "登录",
  logout: "退出",
  username: "用户名",
  password: "密码",
  loginFailed: "用户名或密码错误",
  loginBlocked: "失败次数过多，请稍后再试",
  online: "在线",
  offline: "离线 · 正在重连",
  connecting: "连接中",
  alerts: "告警",
  noAlerts: "暂无待办告警",
  cameras: "摄像头",
  figures: "办理情况",
  closureRate: "办结率",
  onTimeRate: "按时办结率",
  medianClose: "办结用时中位数",
  falseAlarmShare: "误报占比",
  openCases: "在办",
  perHazard: "分类型办结率与误报占比",
  ack: "确认",
  acked: "已确认",
  verify: "核实",
  age: "已发生",
  deadline: "时限",
  overdue: "已超时",
  noDeadline: "无时限",
  severity: "等级",
  debugView: "实时分析画面",
  close: "关闭",
  debugUnavailable: "画面暂不可用",
  lastFrame: "最新画面",
  never: "无",
  myTickets: "我的待办",
  noTickets: "暂无待办",
  accept: "接单",
  resolve: "办结上报",
  note: "处理说明",
  notePlaceholder: "写明如何处理",
  photo: "现场照片",
  takePhoto: "拍照",
  submit: "提交",
  uploading: "上传中…",
  uploadFailed: "上传失败，已重试",
  needNoteAndPhoto: "需要处理说明和至少一张照片",
  done: "已提交",
  assignedTo: "处理人",
  unassigned: "未派遣",
  language: "English",
  seconds: "秒",
  minutes: "分",
  hours: "小时",
  days: "天",
  "hazard.fire": "火情",
  "hazard.parking": "违停",
  "hazard.clutter": "堆物",
  "hazard.poster": "小广告",
  "status.received": "待核实",
  "status.verified": "已核实",
  "status.dispatched": "已派遣",
  "status.in_progress": "处置中",
  "status.resolved": "已处置",
  "status.checked": "已核查",
  "status.closed": "已结案",
  "status.false_alarm": "误报",
  "health.streaming": "正常",
  "health.starting": "启动中",
  "health.reconnecting": "重连中",
  "health.error": "故障",
  "health.stopped": "已停止",
  "health.unknown": "无数据",
};

export type MessageKey = keyof typeof zh;

const en: Record<MessageKey, string> = {
  appName: "gridwatch",
  wallTitle: "gridwatch · command centre",
  phoneTitle: "Patrol",
  login: "Log in",
  logout: "Log out",
  username: "User name",
  password: "Password",
  loginFailed: "Wrong user name or password",
  loginBlocked: "Too many failed logins; try again later",
  online: "Live",
  offline: "Offline · reconnecting",
  connecting: "Connecting",
  alerts: "Alerts",
  noAlerts: "No open alerts",
  cameras: "Cameras",
  figures: "Performance",
  closureRate: "Closure rate",
  onTimeRate: "On-time closure",
  medianClose: "Median time to close",
  falseAlarmShare: "False alarms",
  openCases: "Open",
  perHazard: "Closure rate and false-alarm share per hazard",
  ack: "Acknowledge",
  acked: "Acknowledged",
  verify: "Verify",
  age: "Age",
  deadline: "Deadline",
  overdue: "Overdue",
  noDeadline: "No deadline",
  severity: "Severity",
  debugView: "Live analysis view",
  close: "Close",
  debugUnavailable: "Picture not available",
  lastFrame: "Last frame",
  never: "never",
  myTickets: "My open tickets",
  noTickets: "Nothing to do",
  accept: "Accept",
  resolve: "Report resolved",
  note: "What was done",
  notePlaceholder: "Describe the fix",
  photo: "Photo",
  takePhoto: "Take photo",
  submit: "Submit",
  uploading: "Uploading…",
  uploadFailed: "Upload failed after retries",
  needNoteAndPhoto: "A note and at least one photo are needed",
  done: "Submitted",
  assignedTo: "Assignee",
  unassigned: "not dispatched",
  language: "中文",
  seconds: "s",
  minutes: "min",
  hours: "h",
  days: "d",
  "hazard.fire": "Fire",
  "hazard.parking": "Illegal parking",
  "hazard.clutter": "Clutter",
  "hazard.poster": "Flyers",
  "status.received": "Received",
  "status.verified": "Verified",
  "status.dispatched": "Dispatched",
  "status.in_progress": "In progress",
  "status.resolved": "Resolved",
  "status.checked": "Checked",
  "status.closed": "Closed",
  "status.false_alarm": "False alarm",
  "health.streaming": "OK",
  "health.starting": "Starting",
  "health.reconnecting": "Reconnecting",
  "health.error": "Error",
  "health.stopped": "Stopped",
  "health.unknown": "No data",
};

export const catalogue: Record<Locale, Record<MessageKey, string>> = { "zh-CN": zh, en };

function initialLocale(): Locale {
  const saved = localStorage.getItem("gridwatch.locale");
  return saved === "en" ? "en" : "zh-CN";
}

export const locale = ref<Locale>(initialLocale());

export function setLocale(value: Locale): void {
  locale.value = value;
  localStorage.setItem("gridwatch.locale", value);
  document.documentElement.lang = value;
}

export function toggleLocale(): void {
  setLocale(locale.value === "zh-CN" ? "en" : "zh-CN");
}

/** The label of `key` in the current locale (unknown dynamic keys such as a new hazard show as is). */
export function t(key: MessageKey | string): string {
  const table = catalogue[locale.value] as Record<string, string>;
  return table[key] ?? (zh as Record<string, string>)[key] ?? key.split(".").pop() ?? key;
}

/** "3分" / "1小时5分" / "2 d": a duration in the current locale. */
export function duration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const sep = locale.value === "en" ? " " : "";
  if (s < 60) return `${s}${sep}${t("seconds")}`;
  if (s < 3600) return `${Math.floor(s / 60)}${sep}${t("minutes")}`;
  if (s < 86400) return `${Math.floor(s / 3600)}${sep}${t("hours")}${sep}${Math.floor((s % 3600) / 60)}${sep}${t("minutes")}`;
  return `${Math.floor(s / 86400)}${sep}${t("days")}${sep}${Math.floor((s % 86400) / 3600)}${sep}${t("hours")}`;
}

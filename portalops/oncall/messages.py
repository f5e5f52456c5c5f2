"""What a page says, in Vietnamese (the default) or English: alert, resolution, report
reminder, test. The alert's own words come from its rule's annotations (``summary`` and
``description`` in Vietnamese, ``summary_en`` and ``description_en`` in English).

Every text is NFC-normalised UTF-8, whatever the annotations arrive as.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from portalops.oncall.store import Incident

Lang = str  # "vi" | "en"

_SEVERITY = {
    "vi": {"critical": "NGHIÊM TRỌNG", "warning": "CẢNH BÁO", "info": "THÔNG TIN"},
    "en": {"critical": "CRITICAL", "warning": "WARNING", "info": "INFO"},
}
_WORDS = {
    "vi": {
        "resolved": "ĐÃ KHẮC PHỤC",
        "incident": "Sự cố",
        "opened": "Bắt đầu",
        "resolved_at": "Kết thúc",
        "step": "Bước báo động {step}, vòng {round}",
        "ack_link": "Xác nhận đã nhận xử lý (liên kết có hiệu lực đến {until}):",
        "ack_cli": "Hoặc trên máy chủ giám sát: ops oncall ack {id}",
        "paged_because": "Bạn nhận tin này vì đang trực ({reason}).",
        "resolved_body": "Cảnh báo đã hết. Không cần xử lý thêm cho sự cố này.",
        "reminder_title": "Nhắc hạn báo cáo sự cố #{id}: {report} trước {due}",
        "reminder_body": (
            "Sự cố nghiêm trọng #{id} ({alert}) bắt đầu lúc {opened}. Theo Điều 31 Nghị định "
            "331/2026, {report} phải gửi trước {due} (còn {left})."
        ),
        "initial": "báo cáo ban đầu",
        "full": "báo cáo đầy đủ",
        "test_title": "Tin thử của hệ thống trực portal-ops",
        "test_body": (
            "Đây là tin thử gửi tới {name} qua kênh {channel}. Nếu bạn nhận được, kênh này "
            "hoạt động. Không cần trả lời."
        ),
        "labels": "Nhãn",
        "group": "{count} cảnh báo trong nhóm này:",
    },
    "en": {
        "resolved": "RESOLVED",
        "incident": "Incident",
        "opened": "Started",
        "resolved_at": "Ended",
        "step": "Escalation step {step}, round {round}",
        "ack_link": "Acknowledge (link valid until {until}):",
        "ack_cli": "Or on the monitoring host: ops oncall ack {id}",
        "paged_because": "You get this because you are on call ({reason}).",
        "resolved_body": "The alert has cleared. Nothing more to do for this incident.",
        "reminder_title": "Incident #{id} report due: {report} before {due}",
        "reminder_body": (
            "Serious incident #{id} ({alert}) started at {opened}. Under Decree 331/2026 "
            "Art. 31 the {report} is due before {due} ({left} left)."
        ),
        "initial": "initial notice",
        "full": "full report",
        "test_title": "portal-ops on-call test message",
        "test_body": (
            "This is a test sent to {name} through the {channel} channel. If you read it, the "
            "channel works. No reply needed."
        ),
        "labels": "Labels",
        "group": "{count} alerts in this group:",
    },
}


@dataclass(frozen=True)
class Message:
    title: str
    body: str


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _when(stamp: float, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(stamp, zone).strftime("%Y-%m-%d %H:%M %Z")


def _annotation(incident: Incident, key: str, lang: Lang) -> str:
    notes = incident.annotations
    if lang == "en":
        return notes.get(f"{key}_en") or notes.get(key, "")
    return notes.get(key) or notes.get(f"{key}_en", "")


def _subject_of(labels: dict[str, str]) -> str:
    where = labels.get("domain") or labels.get("source") or labels.get("instance") or ""
    return f"{labels.get('alertname', '?')} {where}".strip()


def _subject(incident: Incident) -> str:
    return _subject_of({**incident.labels, "alertname": incident.alertname})


def page(
    incident: Incident, lang: Lang, zone: ZoneInfo, *, reason: str, ack_link: str, until: float
) -> Message:
    words = _WORDS[lang]
    severity = _SEVERITY[lang].get(incident.severity, incident.severity.upper())
    summary = _annotation(incident, "summary", lang) or _subject(incident)
    title = f"[{severity}] #{incident.id} {summary}"
    lines = [
        _annotation(incident, "description", lang),
        "",
        f"{words['incident']} #{incident.id}: {_subject(incident)}",
        f"{words['opened']}: {_when(incident.opened_at, zone)}",
        words["step"].format(step=incident.step + 1, round=incident.round + 1),
        words["paged_because"].format(reason=reason),
        "",
        words["ack_link"].format(until=_when(until, zone)),
        ack_link,
        words["ack_cli"].format(id=incident.id),
    ]
    firing = [a["labels"] for a in incident.alerts.values() if a["status"] == "firing"]
    if len(firing) > 1:
        lines += ["", _WORDS[lang]["group"].format(count=len(firing))]
        lines += [f"- {_subject_of(a)}" for a in firing[:20]]
        if len(firing) > 20:
            lines.append(f"- … (+{len(firing) - 20})")
    runbook = incident.annotations.get("runbook_url")
    if runbook:
        lines += ["", f"Runbook: {runbook}"]
    labels = ", ".join(f"{k}={v}" for k, v in incident.labels.items())
    lines += ["", f"{words['labels']}: {labels}"]
    return Message(_nfc(title), _nfc("\n".join(lines).strip() + "\n"))


def resolved(incident: Incident, lang: Lang, zone: ZoneInfo) -> Message:
    words = _WORDS[lang]
    summary = _annotation(incident, "summary", lang) or _subject(incident)
    title = f"[{words['resolved']}] #{incident.id} {summary}"
    lines = [
        words["resolved_body"],
        "",
        f"{words['incident']} #{incident.id}: {_subject(incident)}",
        f"{words['opened']}: {_when(incident.opened_at, zone)}",
    ]
    if incident.resolved_at is not None:
        lines.append(f"{words['resolved_at']}: {_when(incident.resolved_at, zone)}")
    return Message(_nfc(title), _nfc("\n".join(lines) + "\n"))


def reminder(
    incident: Incident, report: str, due: float, now: float, lang: Lang, zone: ZoneInfo
) -> Message:
    words = _WORDS[lang]
    left_minutes = max(0, round((due - now) / 60))
    hours, minutes = divmod(left_minutes, 60)
    left = f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"
    fields = {
        "id": incident.id,
        "report": words[report],
        "due": _when(due, zone),
        "alert": _subject(incident),
        "opened": _when(incident.opened_at, zone),
        "left": left,
    }
    return Message(
        _nfc(words["reminder_title"].format(**fields)),
        _nfc(words["reminder_body"].format(**fields) + "\n"),
    )


def test(name: str, channel: str, lang: Lang) -> Message:
    words = _WORDS[lang]
    return Message(
        _nfc(words["test_title"]),
        _nfc(words["test_body"].format(name=name, channel=channel) + "\n"),
    )

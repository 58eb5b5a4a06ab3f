"""The report's "Runtime choice" section: every candidate runtime timed side by side, scored, and the reason."""

from __future__ import annotations

from typing import Any


def _fmt(value: object, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"


def runtime_choice_markdown(choice: dict[str, Any]) -> str:
    header = ["candidate", "runtime", "p50 ms", "p95 ms", "size MB", "validation drop pt ± SE", "budgets", ""]
    rows = []
    for row in choice.get("candidates", []):
        drop = f"{_fmt(row.get('drop_pt'))} ± {_fmt(row.get('drop_se_pt'))}" if "drop_pt" in row else "-"
        failures = row.get("budget_failures")
        status = "-" if failures is None else ("within" if not failures else "; ".join(failures))
        chosen = "**chosen**" if row["label"] == choice["chosen"] else ""
        rows.append([row["label"], row["runtime"], _fmt(row.get("p50_ms")), _fmt(row.get("p95_ms")),
                     _fmt(row.get("size_mb"), 1), drop, status, chosen])
    lines = [f"Chosen: **{choice['chosen']}** ({choice['runtime']}): {choice['reason']}.", ""]
    caps = choice.get("cpu_capabilities") or {}
    if caps:
        lines += [f"CPU: {caps.get('kind')}, VNNI {'yes' if caps.get('vnni') else 'no'}, bf16 "
                  f"{'yes' if caps.get('bf16') else 'no'}, AMX {'yes' if caps.get('amx') else 'no'}.", ""]
    if rows:
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                  *["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]]
        timing = choice.get("timing")
        if timing:
            lines += ["", f"Timed side by side at {timing['shape']}: {timing['rounds']} rounds in one process "
                          f"({timing['seconds']} s); accuracy on the validation split vs the fp32 export."]
    for skipped in choice.get("skipped", []):
        lines.append(f"- not a candidate here: {skipped['label']}: {skipped['why']}")
    return "\n".join(lines)

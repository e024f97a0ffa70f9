"""Condense ESPnet's ``train.log`` into one line per event while training runs.

Reads log lines on stdin (``tail -F exp/.../train.log | helper.py progress``) and prints the model
size, each epoch start, each epoch's main numbers and the end of training, e.g.::

    [train] epoch 3/10: train loss=41.2 | valid loss=35.0 cer_ctc=0.21 | 1 minute and 52 seconds
"""
from __future__ import annotations

import re
import sys
from typing import Dict, Optional, TextIO

RESULT = re.compile(r"(\d+)epoch results: (.*)$")
STARTED = re.compile(r"(\d+)/(\d+)epoch started")
SECTION = re.compile(r"\[(\w+)\] ([^\[]*)")
SHOWN = ("loss", "loss_ctc", "loss_att", "acc", "cer_ctc", "cer", "wer")


def parse_results(message: str) -> Dict[str, Dict[str, str]]:
    """'[train] a=1, b=2, [valid] c=3' -> {'train': {'a': '1', 'b': '2'}, 'valid': {'c': '3'}}."""
    out: Dict[str, Dict[str, str]] = {}
    for section, body in SECTION.findall(message):
        pairs = (kv.split("=", 1) for kv in body.split(", ") if "=" in kv)
        out[section] = {k.strip(): v.strip().rstrip(",") for k, v in pairs}
    return out


def summarise(line: str, max_epoch: Optional[int]) -> Optional[str]:
    """One progress line for a log line worth showing, else None."""
    if "Total Number of model parameters" in line:
        return "model parameters: " + line.split(":")[-1].strip()
    m = STARTED.search(line)
    if m:
        return f"epoch {m.group(1)}/{m.group(2)} started"
    m = RESULT.search(line)
    if m:
        r = parse_results(m.group(2))
        parts = []
        for section in ("train", "valid"):
            stats = r.get(section, {})
            shown = " ".join(f"{k}={stats[k]}" for k in SHOWN if stats.get(k, "nan") != "nan")
            if shown:
                parts.append(f"{section} {shown}")
        time = r.get("train", {}).get("time", "")
        epoch = f"{m.group(1)}/{max_epoch}" if max_epoch else m.group(1)
        return f"epoch {epoch}: " + " | ".join(parts) + (f" | {time}" if time else "")
    for marker in ("The training was resumed", "The training was finished", "There are no improvements"):
        if marker in line:
            return line[line.index(marker):].strip()
    return None


def follow(stream: TextIO, out: TextIO = sys.stdout) -> None:
    max_epoch = None
    for line in stream:
        m = STARTED.search(line)
        if m:
            max_epoch = int(m.group(2))
        message = summarise(line, max_epoch)
        if message:
            out.write(f"[train] {message}\n")
            out.flush()


if __name__ == "__main__":
    follow(sys.stdin)

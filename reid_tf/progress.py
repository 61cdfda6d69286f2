"""Progress lines of long loops (encoding a gallery, scoring pairs): done/total, rate and ETA.

One class for ranking (reid_tf.rank) and large-gallery scoring (reid_tf.shortlist); absl logging,
no carriage returns, so the lines read the same in a terminal and in a log file.
"""
from __future__ import annotations

import math
import time

from absl import logging


def hms(seconds: float) -> str:
    """H:MM:SS with unbounded hours ('?' when unknown)."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """Logs "<what>: done/total <unit> (pct), rate <unit>/s, ETA h:mm:ss" at most every `every` seconds.

    Args:
      what, total, unit: what is counted, how many in all, and in what (e.g. "pairs").
      every: seconds between lines.
      at_end: also log a line when done (a summary of the whole loop); by default short jobs stay quiet.
    """

    def __init__(self, what: str, total: int, unit: str, every: float = 10.0, at_end: bool = False):
        self.what, self.total, self.unit = what, int(total), unit
        self.every, self.at_end = float(every), bool(at_end)
        self.done = 0
        self.start = self.last = time.monotonic()

    def update(self, n: int) -> None:
        """Count `n` more done; log if `every` seconds have passed (or, with at_end, if all are done)."""
        self.done += int(n)
        now = time.monotonic()
        finished = self.done >= self.total
        if (finished and not self.at_end) or (now - self.last < self.every and not finished):
            return
        self.last = now
        rate = self.done / max(now - self.start, 1e-9)
        eta = (self.total - self.done) / rate if rate > 0 else math.inf
        logging.info("%s: %d/%d %s (%.0f%%), %.1f %s/s, ETA %s", self.what, self.done, self.total, self.unit,
                     100 * self.done / max(self.total, 1), rate, self.unit, hms(eta))

"""tipline: an anonymous public tip line on Telegram for an inspection campaign."""

import os

# Opt in to PTB 22's timedelta-valued time fields now (RetryAfter.retry_after and kin),
# rather than being warned about the change on every rate-limit answer.
os.environ.setdefault("PTB_TIMEDELTA", "1")

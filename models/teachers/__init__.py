"""Teachers: sources of labels for unlabelled clips (Gemini, replayed answers, a local model).

`base` holds the interface and the answer statuses, `runner` the cache, budget, rate limit and
retry loop around any teacher, `ordering` the priority order of the pool.
"""

from models.teachers.base import (
                                  ANSWERED,
                                  CACHED_STATUSES,
                                  ENRICH,
                                  FAILED,
                                  LABEL,
                                  NOT_ASKED,
                                  REFUSED,
                                  UNPARSEABLE,
                                  Answer,
                                  Clip,
                                  Teacher,
                                  TeacherError,
)
from models.teachers.gemini import GeminiTeacher
from models.teachers.limits import Budget, RateLimiter, RetryPolicy
from models.teachers.local import LocalTeacher
from models.teachers.replay import ReplayTeacher

__all__ = ["ANSWERED", "CACHED_STATUSES", "ENRICH", "FAILED", "LABEL", "NOT_ASKED", "REFUSED", "UNPARSEABLE",
           "Answer", "Budget", "Clip", "GeminiTeacher", "LocalTeacher", "RateLimiter", "ReplayTeacher",
           "RetryPolicy", "Teacher", "TeacherError"]

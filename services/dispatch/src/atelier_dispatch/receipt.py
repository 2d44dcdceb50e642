"""A finished job's receipt (ADR 0024): each image charged or not, and why. Pure: no I/O.

It states what the settlement in profiles charges (`GovernanceService.record_job_outcome`):
each landed image at the price of the profile that made it, nothing for the others. Credits
are summed in thousandths, as profiles keeps them, so the totals match its figures exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from atelier_contracts.errors import ErrorClass, ErrorInfo
from atelier_contracts.jobs import JobImage, JobStatus
from atelier_contracts.receipts import JobReceipt, ReceiptLine

Outcome = Literal["landed", "blocked", "failed", "timed_out", "cancelled", "not_made"]


@dataclass(frozen=True)
class TaskOutcome:
    """A task as the receipt needs it: the images it covers, its status and its error."""

    first_index: int
    n: int
    status: str
    error: dict[str, Any] | None


def _milli(credits: float) -> int:
    return round(credits * 1000)


def _why(error: ErrorInfo | None, status: JobStatus) -> tuple[Outcome, str, str | None]:
    if error is None:
        if status is JobStatus.CANCELLED:
            return "cancelled", "Not charged: the job was cancelled before it was made.", None
        return "not_made", "Not charged: the provider returned no image for it.", None
    cls = error.error_class
    if cls is ErrorClass.CONTENT_BLOCKED:
        where = f" at the {error.stage} stage" if error.stage else ""
        return "blocked", f"Not charged: the provider refused it{where}.", cls.value
    if cls is ErrorClass.CANCELLED:
        return "cancelled", "Not charged: the job was cancelled.", cls.value
    if cls is ErrorClass.TIMEOUT:
        return "timed_out", "Not charged: it took too long and was abandoned.", cls.value
    return "failed", f"Not charged: it failed ({cls.value}).", cls.value


def build_receipt(
    *,
    status: JobStatus,
    count: int,
    credit_cost: float,
    images: Sequence[JobImage],
    tasks: Sequence[TaskOutcome],
    job_error: ErrorInfo | None,
) -> JobReceipt:
    """The receipt of a final job of `count` images reserved at `credit_cost` each."""
    landed = {image.index: image for image in images}
    task_of: dict[int, TaskOutcome] = {}
    for made in tasks:
        for index in range(made.first_index, made.first_index + made.n):
            task_of[index] = made
    lines: list[ReceiptLine] = []
    charged_milli = 0
    for index in range(count):
        image = landed.get(index)
        if image is not None:
            price = image.credit_cost if image.credit_cost is not None else credit_cost
            charged_milli += _milli(price)
            lines.append(
                ReceiptLine(
                    index=index,
                    charged=True,
                    credits=_milli(price) / 1000,
                    outcome="landed",
                    reason=f"Charged: the image landed ({image.profile_name or 'its profile'}).",
                    media_id=image.media_id,
                )
            )
            continue
        task = task_of.get(index)
        if task is not None and task.error:
            outcome, reason, error_class = _why(ErrorInfo.model_validate(task.error), status)
        elif task is not None and task.status == "cancelled":
            outcome, reason, error_class = "cancelled", "Not charged: the job was cancelled.", None
        else:  # no task made (it failed before), or one without its own error
            outcome, reason, error_class = _why(job_error, status)
        lines.append(
            ReceiptLine(
                index=index,
                charged=False,
                credits=0.0,
                outcome=outcome,
                reason=reason,
                error_class=error_class,
            )
        )
    reserved_milli = _milli(credit_cost) * count
    charged = sum(1 for line in lines if line.charged)
    return JobReceipt(
        images=lines,
        charged_images=charged,
        not_charged_images=count - charged,
        credits_reserved=reserved_milli / 1000,
        credits_charged=charged_milli / 1000,
        credits_refunded=max(0, reserved_milli - charged_milli) / 1000,
    )

"""Jobs: commands a buyer runs on its rental's nodes. The buyer submits and cancels; the node's agent claims, starts,
streams the output of and finishes them. Every agent write is idempotent (a chunk by its number, a finish by the
job's state), so a resend after a lost answer changes nothing."""

import base64
import binascii
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils.dateparse import parse_datetime
from django.utils.timezone import is_naive, now
from django.utils.translation import gettext as _

from accounts.models import Organization, User
from marketplace.core.errors import Conflict, DomainError, NotFound
from marketplace.models import Job, JobLogChunk, Node, Rental, RentalNode

ENV_NAME_MAX = 128
FINISH_STATUSES = {Job.Status.SUCCEEDED, Job.Status.FAILED, Job.Status.TIMED_OUT, Job.Status.CANCELLED}
FINISH_STATUS_CHOICES = [(status.value, status.label) for status in Job.Status if status in FINISH_STATUSES]


def _invalid(field: str, message: str) -> DomainError:
    return DomainError(message, code="invalid_job", fields={field: [message]})


def _command_validate(command: object) -> list[str]:
    if isinstance(command, str):
        raise _invalid("command", _('Give the command as a list of arguments, e.g. ["python", "-c", "print(1)"].'))
    if not isinstance(command, list) or not command or len(command) > 1000:
        raise _invalid("command", _("The command must be a list of 1 to 1000 arguments."))
    if not all(isinstance(arg, str) and "\x00" not in arg and len(arg) <= 100_000 for arg in command):
        raise _invalid("command", _("Each argument must be text without NUL characters."))
    return command


def _environment_validate(environment: object) -> dict[str, str]:
    if not isinstance(environment, dict) or len(environment) > 200:
        raise _invalid("environment", _("The environment must be an object of at most 200 names and values."))
    for name, value in environment.items():
        valid_name = name and len(name) <= ENV_NAME_MAX and name.replace("_", "a").isalnum() and not name[0].isdigit()
        if not valid_name or not isinstance(value, str) or "\x00" in value:
            raise _invalid("environment", _("“%(name)s” is not a valid variable or value.") % {"name": name[:40]})
    return environment


def _files_validate(files: object) -> dict[str, str]:
    """Working files: a relative path → base64 content, at most JOB_FILES_MAX_BYTES decoded in all."""
    if not isinstance(files, dict):
        raise _invalid("files", _("Files must be an object of relative paths and base64 contents."))
    total = 0
    for name, content in files.items():
        parts = name.replace("\\", "/").split("/")
        if not name or name.startswith("/") or ".." in parts or "\x00" in name or len(name) > 255:
            raise _invalid("files", _("“%(name)s” is not a relative path inside the job's directory.") % {"name": name})
        try:
            total += len(base64.b64decode(content, validate=True)) if isinstance(content, str) else -1
        except (binascii.Error, ValueError):
            total = -1
        if total < 0:
            raise _invalid("files", _("The content of “%(name)s” is not base64.") % {"name": name})
    if total > settings.JOB_FILES_MAX_BYTES:
        message = _("Working files may hold at most %(n)d bytes in all.") % {"n": settings.JOB_FILES_MAX_BYTES}
        raise _invalid("files", message)
    return files


@transaction.atomic
def job_submit(
    *,
    organization: Organization,
    rental_id: int,
    command: object,
    environment: object = None,
    files: object = None,
    time_limit_seconds: int | None = None,
    name: str = "",
    created_by: User | None = None,
) -> Job:
    """Queue a job on a running rental placed on nodes; its node's agent picks it up at its next heartbeat."""
    rental = Rental.objects.select_for_update().filter(pk=rental_id, organization=organization).first()
    if rental is None:
        raise NotFound(_("No such rental."), code="rental_not_found")
    if rental.status not in (Rental.Status.RUNNING, Rental.Status.PROVISIONING):
        raise Conflict(_("Jobs run on a running rental only."), code="rental_not_running", status=rental.status)
    if not RentalNode.objects.filter(rental=rental, released_at__isnull=True).exists():
        raise Conflict(_("This rental runs on no node of an agent: it cannot run jobs."), code="rental_without_nodes")
    limit = time_limit_seconds or settings.JOB_DEFAULT_TIME_LIMIT_SECONDS
    if type(limit) is not int or not 0 < limit <= settings.JOB_MAX_TIME_LIMIT_SECONDS:
        message = _("The time limit must be 1 to %(n)d seconds.") % {"n": settings.JOB_MAX_TIME_LIMIT_SECONDS}
        raise _invalid("time_limit_seconds", message)
    return Job.objects.create(
        organization=organization,
        rental=rental,
        created_by=created_by,
        name=str(name or "")[:100],
        command=_command_validate(command),
        environment=_environment_validate(environment or {}),
        files=_files_validate(files or {}),
        time_limit_seconds=limit,
    )


@transaction.atomic
def job_cancel(*, organization: Organization, job_id: int) -> Job:
    """Stop a job: a queued one is cancelled now; a running one is stopped by its agent, which reports the end."""
    job = Job.objects.select_for_update().filter(pk=job_id, organization=organization).first()
    if job is None:
        raise NotFound(_("No such job."), code="job_not_found")
    if job.is_ended:
        raise Conflict(_("This job has already ended."), code="job_ended", status=job.status)
    moment = now()
    if job.status == Job.Status.QUEUED:
        job.status, job.finished_at = Job.Status.CANCELLED, moment
    job.cancel_requested_at = job.cancel_requested_at or moment
    job.save(update_fields=["status", "finished_at", "cancel_requested_at", "updated_at"])
    return job


# --- The agent's side ---


def _node_job(*, node: Node, job_id: int, lock: bool = True) -> Job:
    jobs = Job.objects.filter(pk=job_id, node=node)
    job = (jobs.select_for_update() if lock else jobs).first()
    if job is None:
        raise NotFound(_("No such job on this node."), code="job_not_found")
    return job


@transaction.atomic
def job_claim(*, node: Node) -> tuple[Job, RentalNode] | None:
    """The oldest queued job of a rental placed (and taken up) on this node, now the node's; None when there is none."""
    placements = RentalNode.objects.filter(node=node, released_at__isnull=True, ready_at__isnull=False)
    placement = None
    job = (
        Job.objects.select_for_update(skip_locked=True)
        .filter(status=Job.Status.QUEUED, node__isnull=True, rental_id__in=placements.values("rental_id"))
        .order_by("created_at", "pk")
        .first()
    )
    if job is None:
        return None
    placement = placements.get(rental_id=job.rental_id)
    job.node = node
    job.status = Job.Status.RUNNING
    job.save(update_fields=["node", "status", "updated_at"])
    return job, placement


def _time(value: object, field: str) -> datetime:
    moment = parse_datetime(str(value or "")) if value else None
    if moment is None or is_naive(moment):
        raise _invalid(field, _("%(field)s must be an ISO 8601 time with a zone.") % {"field": field})
    return moment


@transaction.atomic
def job_start(*, node: Node, job_id: int, started_at: object) -> Job:
    job = _node_job(node=node, job_id=job_id)
    if job.started_at is None and not job.is_ended:
        job.started_at = _time(started_at, "started_at")
        job.save(update_fields=["started_at", "updated_at"])
    return job


def job_log_append(*, node: Node, job_id: int, chunks: object) -> Job:
    """Store output chunks (a chunk's number already stored is skipped), up to JOB_LOG_MAX_BYTES per job."""
    if not isinstance(chunks, list) or len(chunks) > 1000:
        raise _invalid("chunks", _("chunks must be a list of at most 1000 chunks."))
    rows = []
    for chunk in chunks:
        valid = isinstance(chunk, dict) and type(chunk.get("seq")) is int and 0 <= chunk["seq"] < 2**31
        if not valid or chunk.get("stream") not in JobLogChunk.Stream.values or not isinstance(chunk.get("text"), str):
            raise _invalid("chunks", _("Each chunk needs a seq number, a stream (stdout or stderr) and text."))
        rows.append(chunk)
    with transaction.atomic():
        job = _node_job(node=node, job_id=job_id)
        known = set(JobLogChunk.objects.filter(job=job, seq__in=[c["seq"] for c in rows]).values_list("seq", flat=True))
        room = settings.JOB_LOG_MAX_BYTES - job.log_bytes
        moment, new, size = now(), [], 0
        for chunk in rows:
            if chunk["seq"] in known:
                continue
            known.add(chunk["seq"])
            text = chunk["text"].replace("\x00", "\ufffd")
            encoded = len(text.encode())
            if size + encoded > room:
                job.log_truncated = True
                continue
            size += encoded
            new.append(JobLogChunk(job=job, seq=chunk["seq"], stream=chunk["stream"], text=text, at=moment))
        JobLogChunk.objects.bulk_create(new)
        Job.objects.filter(pk=job.pk).update(
            log_bytes=F("log_bytes") + size, log_truncated=job.log_truncated, updated_at=moment
        )
    return job


@transaction.atomic
def job_finish(*, node: Node, job_id: int, status: object, exit_code: object, started_at: object, finished_at: object):
    """The agent's report of the job's end. A job already ended (cancelled while queued, lost, or reported before)
    keeps its first end."""
    if not isinstance(status, str) or status not in FINISH_STATUSES:
        raise _invalid("status", _("status must be one of %(s)s.") % {"s": ", ".join(sorted(FINISH_STATUSES))})
    if exit_code is not None and (type(exit_code) is not int or not -(2**31) <= exit_code < 2**31):
        raise _invalid("exit_code", _("exit_code must be an integer or null."))
    job = _node_job(node=node, job_id=job_id)
    if job.is_ended:
        return job
    job.started_at = job.started_at or _time(started_at, "started_at")
    job.finished_at = max(_time(finished_at, "finished_at"), job.started_at)
    job.status, job.exit_code = status, exit_code
    job.save(update_fields=["status", "exit_code", "started_at", "finished_at", "updated_at"])
    return job

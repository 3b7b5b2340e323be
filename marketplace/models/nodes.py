"""Provider nodes: the machines behind an offering, as their agent reports them, and the work they run.

A node is made in the provider console with a token that is shown once; the agent started with that token
registers the hardware, benchmarks it, heartbeats and runs the jobs of the rentals placed on it.
"""

from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _

from marketplace.core.models import TimeStampedModel


class NodeStatus(models.TextChoices):
    AWAITING = "awaiting", _("Awaiting its agent")
    ONLINE = "online", _("Online")
    OFFLINE = "offline", _("Offline")
    RETIRED = "retired", _("Retired")


# Why a node is held for review, by code: stored as the code and its values, worded in the reader's language.
REVIEW_MESSAGES = {
    "detection_failed": _("The agent could not read the accelerators: %(e)s"),
    "undetectable_accelerator": _("%(model)s cannot be detected by the agent; staff check the node by hand."),
    "accelerators_mismatch": _("The offering lists %(n)d × %(model)s per node; the agent found %(found)s."),
    "mig_enabled": _("MIG is on for accelerator %(i)d: a partitioned GPU is not a whole accelerator."),
    "cpu_mismatch": _("The offering lists %(n)d vCPU per node; the node has %(m)d."),
    "ram_mismatch": _("The offering lists %(n)d GB of RAM per node; the node has %(m)s GB."),
    "benchmark_failed": _("The benchmark could not run: %(e)s"),
    "gpu_not_benchmarked": _("The node's GPUs were not benchmarked (PyTorch with CUDA is needed on the node)."),
    "below_datasheet": _("Below %(share)s%% of the datasheet at %(precisions)s."),
}


class Node(TimeStampedModel):
    """One machine of a provider, in one offering. Its token authenticates its agent; only the hash is kept."""

    Status = NodeStatus
    # Live: it gives its offering capacity (see `is_live`).
    LIVE = Q(status=NodeStatus.ONLINE, verified_at__isnull=False, needs_review=False)

    provider = models.ForeignKey("accounts.Organization", on_delete=models.PROTECT, related_name="nodes")
    offering = models.ForeignKey("marketplace.Offering", on_delete=models.PROTECT, related_name="nodes")
    name = models.CharField(_("name"), max_length=100)
    # The public part of the token (`mkn_<prefix>_…`), used to find the row; not a secret.
    token_prefix = models.CharField(max_length=16, unique=True)
    token_hash = models.CharField(max_length=64)
    status = models.CharField(_("status"), max_length=12, choices=NodeStatus.choices, default=NodeStatus.AWAITING)
    status_changed_at = models.DateTimeField(_("status changed at"))
    # What the agent reported at registration.
    hostname = models.CharField(_("hostname"), max_length=255, blank=True)
    cpu_model = models.CharField(_("CPU model"), max_length=255, blank=True)
    cpu_cores = models.PositiveIntegerField(_("CPU cores"), null=True, blank=True)
    ram_gb = models.DecimalField(_("RAM (GB)"), max_digits=9, decimal_places=2, null=True, blank=True)
    disk_gb = models.DecimalField(_("disk (GB)"), max_digits=11, decimal_places=2, null=True, blank=True)
    os = models.CharField(_("operating system"), max_length=255, blank=True)
    agent_version = models.CharField(_("agent version"), max_length=40, blank=True)
    registered_at = models.DateTimeField(_("registered at"), null=True, blank=True)
    last_heartbeat_at = models.DateTimeField(_("last heartbeat"), null=True, blank=True)
    # The last heartbeat's readings: utilisation, memory, temperature per accelerator, and the jobs running.
    telemetry = models.JSONField(_("telemetry"), default=dict, blank=True)
    # Hardware that does not match the offering, or a benchmark far below the datasheet: no capacity until
    # staff or a better benchmark clear it.
    needs_review = models.BooleanField(_("needs review"), default=False)
    review_reasons = models.JSONField(_("review reasons"), default=list, blank=True)
    verified_at = models.DateTimeField(_("verified at"), null=True, blank=True)
    benchmark_requested_at = models.DateTimeField(_("benchmark requested at"), null=True, blank=True)

    class Meta:
        verbose_name = _("node")
        verbose_name_plural = _("nodes")
        indexes = [
            models.Index(fields=["provider", "-created_at"], name="node_provider_time"),
            models.Index(fields=["offering", "status"], name="node_offering_status"),
            models.Index(fields=["status", "last_heartbeat_at"], name="node_status_heartbeat"),
        ]
        constraints = [models.CheckConstraint(condition=Q(status__in=NodeStatus.values), name="node_status_valid")]

    def __str__(self) -> str:
        return self.name

    @property
    def review_messages(self) -> list[str]:
        """Why it is held for review, in the active language."""
        messages = []
        for reason in self.review_reasons:
            template = REVIEW_MESSAGES.get(reason.get("code", ""))
            params = reason.get("params") or {}
            messages.append(str(template) % params if template and params else str(template or reason.get("code")))
        return messages

    @property
    def is_live(self) -> bool:
        """Online, registered, verified and not held for review: it provides capacity."""
        return self.status == NodeStatus.ONLINE and self.verified_at is not None and not self.needs_review


class NodeAccelerator(models.Model):
    """An accelerator the agent detected on a node (NVML or nvidia-smi), as it was at the last registration."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="accelerators")
    index = models.PositiveSmallIntegerField(_("index"))
    uuid = models.CharField(_("UUID"), max_length=80, blank=True)
    name = models.CharField(_("name"), max_length=120)
    memory_mib = models.PositiveIntegerField(_("memory (MiB)"), null=True, blank=True)
    driver_version = models.CharField(_("driver"), max_length=40, blank=True)
    cuda_version = models.CharField(_("CUDA"), max_length=20, blank=True)
    compute_capability = models.CharField(_("compute capability"), max_length=10, blank=True)
    power_limit_w = models.DecimalField(_("power limit (W)"), max_digits=8, decimal_places=2, null=True, blank=True)
    mig_enabled = models.BooleanField(_("MIG on"), default=False)

    class Meta:
        ordering = ["node", "index"]
        constraints = [models.UniqueConstraint(fields=["node", "index"], name="node_accelerator_unique_index")]

    def __str__(self) -> str:
        return f"{self.node_id}:{self.index} {self.name}"


class NodeBenchmark(models.Model):
    """One benchmark run of a node: dense matrix-product throughput per precision and memory bandwidth, per
    accelerator (the weakest accelerator's figure is the node's), compared with the datasheet."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="benchmarks")
    measured_at = models.DateTimeField(_("measured at"), db_index=True)
    backend = models.CharField(_("backend"), max_length=80)  # e.g. "torch 2.11.0+cu130 (cuda)", "numpy 2.3 (cpu)"
    # precision → TFLOPS (TOPS for int8) per accelerator; a precision the device lacks is absent.
    tflops = models.JSONField(_("TFLOPS per precision"), default=dict)
    memory_bandwidth_gbps = models.DecimalField(
        _("memory bandwidth (GB/s)"), max_digits=10, decimal_places=1, null=True, blank=True
    )
    devices = models.JSONField(_("per device"), default=list)  # the raw figures of each accelerator
    # precision → measured / datasheet peak; empty when the datasheet has no figures (CPU nodes).
    datasheet_ratios = models.JSONField(_("share of the datasheet"), default=dict)
    below_datasheet = models.JSONField(_("precisions below the datasheet threshold"), default=list)
    errors = models.JSONField(_("errors"), default=dict, blank=True)  # precision → why it could not be measured

    class Meta:
        verbose_name = _("node benchmark")
        verbose_name_plural = _("node benchmarks")
        ordering = ["-measured_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.node_id} @ {self.measured_at:%Y-%m-%d %H:%M}"


class NodeStatusChange(models.Model):
    """Every change of a node's status, for its uptime (the reliability score) and its history."""

    node = models.ForeignKey(Node, on_delete=models.CASCADE, related_name="status_changes")
    from_status = models.CharField(max_length=12, choices=NodeStatus.choices, blank=True)
    to_status = models.CharField(max_length=12, choices=NodeStatus.choices)
    at = models.DateTimeField(_("time"))
    reason = models.CharField(_("reason"), max_length=255, blank=True)

    class Meta:
        ordering = ["at", "pk"]
        indexes = [models.Index(fields=["node", "at"], name="node_status_change_time")]

    def __str__(self) -> str:
        return f"{self.node_id}: {self.from_status or '∅'} → {self.to_status}"


class RentalNode(models.Model):
    """A rental placed on a node: which of its accelerators (indices) are the rental's, from when to when."""

    rental = models.ForeignKey("marketplace.Rental", on_delete=models.CASCADE, related_name="placements")
    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="placements")
    accelerator_indices = models.JSONField(_("accelerators"), default=list)
    assigned_at = models.DateTimeField(_("assigned at"))
    ready_at = models.DateTimeField(_("ready at"), null=True, blank=True)  # the agent took it up
    released_at = models.DateTimeField(_("released at"), null=True, blank=True)
    release_reason = models.CharField(_("release reason"), max_length=255, blank=True)

    class Meta:
        ordering = ["assigned_at", "pk"]
        constraints = [
            # A node serves one rental at a time (rentals take whole nodes).
            models.UniqueConstraint(
                fields=["node"], condition=Q(released_at__isnull=True), name="rental_node_one_active_per_node"
            ),
        ]

    def __str__(self) -> str:
        return f"rental {self.rental_id} on node {self.node_id}"


class JobStatus(models.TextChoices):
    QUEUED = "queued", _("Queued")
    RUNNING = "running", _("Running")
    SUCCEEDED = "succeeded", _("Succeeded")
    FAILED = "failed", _("Failed")
    TIMED_OUT = "timed_out", _("Timed out")
    CANCELLED = "cancelled", _("Cancelled")
    LOST = "lost", _("Lost with its node")


class Job(TimeStampedModel):
    """A command a buyer runs on its rental's node: the agent pulls it, runs it, streams its output back."""

    Status = JobStatus
    ENDED_STATUSES = frozenset(
        {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.TIMED_OUT, JobStatus.CANCELLED, JobStatus.LOST}
    )

    organization = models.ForeignKey("accounts.Organization", on_delete=models.PROTECT, related_name="jobs")
    rental = models.ForeignKey("marketplace.Rental", on_delete=models.PROTECT, related_name="jobs")
    node = models.ForeignKey(Node, on_delete=models.PROTECT, null=True, blank=True, related_name="jobs")
    created_by = models.ForeignKey("accounts.User", on_delete=models.SET_NULL, null=True, related_name="+")
    name = models.CharField(_("name"), max_length=100, blank=True)
    command = models.JSONField(_("command"))  # argv: a list of strings, run without a shell
    environment = models.JSONField(_("environment variables"), default=dict, blank=True)
    files = models.JSONField(_("working files"), default=dict, blank=True)  # name → base64 content
    time_limit_seconds = models.PositiveIntegerField(_("time limit (seconds)"))
    status = models.CharField(_("status"), max_length=12, choices=JobStatus.choices, default=JobStatus.QUEUED)
    exit_code = models.IntegerField(_("exit code"), null=True, blank=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    cancel_requested_at = models.DateTimeField(_("cancel requested at"), null=True, blank=True)
    log_bytes = models.PositiveBigIntegerField(_("log size (bytes)"), default=0)
    log_truncated = models.BooleanField(_("log truncated"), default=False)

    class Meta:
        verbose_name = _("job")
        verbose_name_plural = _("jobs")
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["rental", "-created_at"], name="job_rental_time"),
            models.Index(fields=["node", "status"], name="job_node_status"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=JobStatus.values), name="job_status_valid"),
            models.CheckConstraint(condition=Q(time_limit_seconds__gt=0), name="job_time_limit_positive"),
            models.CheckConstraint(
                condition=Q(finished_at__isnull=True)
                | Q(started_at__isnull=True)
                | Q(finished_at__gte=F("started_at")),
                name="job_period_ordered",
            ),
        ]

    def __str__(self) -> str:
        return f"job {self.pk} of rental {self.rental_id}"

    @property
    def is_ended(self) -> bool:
        return self.status in self.ENDED_STATUSES


class JobLogChunk(models.Model):
    """A piece of a job's output, numbered by the agent: a chunk sent twice is stored once."""

    class Stream(models.TextChoices):
        STDOUT = "stdout", "stdout"
        STDERR = "stderr", "stderr"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="log_chunks")
    seq = models.PositiveIntegerField()
    stream = models.CharField(max_length=6, choices=Stream.choices)
    text = models.TextField()
    at = models.DateTimeField()

    class Meta:
        ordering = ["job", "seq"]
        constraints = [models.UniqueConstraint(fields=["job", "seq"], name="job_log_chunk_unique_seq")]

    def __str__(self) -> str:
        return f"job {self.job_id} #{self.seq}"

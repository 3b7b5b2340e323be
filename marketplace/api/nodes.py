"""Nodes and jobs in the API: the agent's endpoints (authenticated by a node token, never an API key), the provider's
nodes (tokens shown once) and the buyer's jobs on its rentals."""

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db.models import QuerySet
from django.utils.translation import gettext as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import authentication, exceptions, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing.services.metering import usage_events_record, usage_events_summary
from marketplace.core.api import ApprovedProviderMixin, OrganizationScopedMixin, ReadOnlyModelSerializer
from marketplace.core.errors import DomainError
from marketplace.models import Job, JobLogChunk, Node, NodeAccelerator, NodeBenchmark, RentalNode
from marketplace.selectors import nodes as node_selectors
from marketplace.services import jobs as job_services
from marketplace.services import nodes as node_services

# --- The agent: node-token authentication ---


class NodeTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer mkn_<id>_<secret>`: the request acts as that node (and for nothing else)."""

    def authenticate(self, request):
        keyword, _sep, token = authentication.get_authorization_header(request).decode("latin-1").partition(" ")
        if keyword != "Bearer" or not token.strip():
            raise exceptions.NotAuthenticated(_("Send the node token as `Authorization: Bearer mkn_…`."))
        try:
            node = node_services.node_authenticate(raw_token=token.strip())
        except DomainError as error:
            raise exceptions.AuthenticationFailed(error.detail, code=error.code) from None
        return AnonymousUser(), node

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="agent"'


class NodeTokenScheme(OpenApiAuthenticationExtension):
    target_class = "marketplace.api.nodes.NodeTokenAuthentication"
    name = "NodeToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "mkn_<id>_<secret> (the provider agent)"}


class IsNode(permissions.BasePermission):
    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, Node)


class AgentView(APIView):
    authentication_classes = [NodeTokenAuthentication]
    permission_classes = [IsNode]

    @property
    def node(self) -> Node:
        return self.request.auth


class AgentAcceleratorSerializer(serializers.Serializer):
    index = serializers.IntegerField(min_value=0)
    name = serializers.CharField()
    uuid = serializers.CharField(required=False, allow_blank=True)
    memory_mib = serializers.IntegerField(required=False, allow_null=True)
    driver_version = serializers.CharField(required=False, allow_blank=True)
    cuda_version = serializers.CharField(required=False, allow_blank=True)
    compute_capability = serializers.CharField(required=False, allow_blank=True)
    power_limit_w = serializers.FloatField(required=False, allow_null=True)
    mig_enabled = serializers.BooleanField(required=False)


class AgentRegisterSerializer(serializers.Serializer):
    """What the agent found on the node (documentation; the service validates the facts it stores)."""

    hostname = serializers.CharField()
    cpu_model = serializers.CharField(required=False, allow_blank=True)
    cpu_cores = serializers.IntegerField(required=False, allow_null=True)
    ram_gb = serializers.FloatField(required=False, allow_null=True)
    disk_gb = serializers.FloatField(required=False, allow_null=True)
    os = serializers.CharField(required=False, allow_blank=True)
    agent_version = serializers.CharField(required=False, allow_blank=True)
    accelerators = AgentAcceleratorSerializer(many=True, required=False)
    source = serializers.CharField(required=False, help_text="nvml, nvidia-smi, none, or error")
    error = serializers.CharField(required=False, allow_blank=True, help_text="why detection failed, if it did")


class ReviewReasonSerializer(serializers.Serializer):
    kind = serializers.CharField()
    code = serializers.CharField()
    message = serializers.CharField()


class AgentRegisteredSerializer(serializers.Serializer):
    node = serializers.IntegerField()
    name = serializers.CharField()
    offering = serializers.IntegerField()
    heartbeat_seconds = serializers.IntegerField()
    benchmark_wanted = serializers.BooleanField()
    needs_review = serializers.BooleanField()
    review_reasons = ReviewReasonSerializer(many=True)


def _review_reasons(node: Node) -> list[dict]:
    return [
        {"kind": reason["kind"], "code": reason["code"], "message": message}
        for reason, message in zip(node.review_reasons, node.review_messages, strict=True)
    ]


def _object(data) -> dict:
    if not isinstance(data, dict):
        raise exceptions.ValidationError({"non_field_errors": [_("Send a JSON object.")]})
    return data


class AgentRegisterView(AgentView):
    """Register (or re-register, after a restart) this node: its host facts and accelerators."""

    @extend_schema(request=AgentRegisterSerializer, responses={200: AgentRegisteredSerializer}, tags=["agent"])
    def post(self, request: Request) -> Response:
        node = node_services.node_register(node_id=self.node.pk, facts=_object(request.data))
        return Response(
            {
                "node": node.pk,
                "name": node.name,
                "offering": node.offering_id,
                "heartbeat_seconds": settings.NODE_HEARTBEAT_SECONDS,
                "benchmark_wanted": node.benchmark_requested_at is not None,
                "needs_review": node.needs_review,
                "review_reasons": _review_reasons(node),
            }
        )


class AgentHeartbeatSerializer(serializers.Serializer):
    telemetry = serializers.DictField(help_text="load, memory, per-GPU readings and `running_jobs` (ids)")


class AgentPlacementSerializer(serializers.Serializer):
    rental = serializers.IntegerField()
    accelerator_indices = serializers.ListField(child=serializers.IntegerField())
    metering = serializers.CharField()
    status = serializers.CharField()


class AgentInstructionsSerializer(serializers.Serializer):
    heartbeat_seconds = serializers.IntegerField()
    benchmark_wanted = serializers.BooleanField()
    placements = AgentPlacementSerializer(many=True)
    cancel_jobs = serializers.ListField(child=serializers.IntegerField())


class AgentHeartbeatView(AgentView):
    """A heartbeat: readings in, what to do out (benchmark, the rentals placed here, jobs to stop)."""

    @extend_schema(request=AgentHeartbeatSerializer, responses={200: AgentInstructionsSerializer}, tags=["agent"])
    def post(self, request: Request) -> Response:
        telemetry = _object(request.data).get("telemetry", {})
        return Response(node_services.node_heartbeat(node_id=self.node.pk, telemetry=telemetry))


class AgentDeviceFiguresSerializer(serializers.Serializer):
    index = serializers.IntegerField(allow_null=True)
    name = serializers.CharField()
    tflops = serializers.DictField(child=serializers.FloatField(), help_text="precision → TFLOPS (TOPS for int8)")
    memory_bandwidth_gbps = serializers.FloatField(allow_null=True)
    errors = serializers.DictField(child=serializers.CharField(), required=False)


class AgentBenchmarkSerializer(serializers.Serializer):
    backend = serializers.CharField()
    devices = AgentDeviceFiguresSerializer(many=True)
    error = serializers.CharField(required=False, help_text="why no benchmark could run")


class NodeBenchmarkSerializer(ReadOnlyModelSerializer):
    class Meta:
        model = NodeBenchmark
        fields = ["id", "measured_at", "backend", "tflops", "memory_bandwidth_gbps", "datasheet_ratios",
                  "below_datasheet", "errors"]  # fmt: skip


class AgentBenchmarkView(AgentView):
    """Benchmark figures; the platform compares them with the datasheet and verifies the node or holds it."""

    @extend_schema(request=AgentBenchmarkSerializer, responses={201: NodeBenchmarkSerializer}, tags=["agent"])
    def post(self, request: Request) -> Response:
        benchmark = node_services.node_benchmark_record(node_id=self.node.pk, figures=_object(request.data))
        return Response(NodeBenchmarkSerializer(benchmark).data, status=status.HTTP_201_CREATED)


class AgentJobSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    rental = serializers.IntegerField()
    command = serializers.ListField(child=serializers.CharField())
    environment = serializers.DictField(child=serializers.CharField())
    files = serializers.DictField(child=serializers.CharField(), help_text="relative path → base64 content")
    time_limit_seconds = serializers.IntegerField()
    accelerator_indices = serializers.ListField(child=serializers.IntegerField())
    accelerators = serializers.IntegerField(help_text="how many accelerators its usage is counted for")
    metering = serializers.CharField(help_text="reported: send its usage as usage events")


class AgentJobClaimView(AgentView):
    """The next queued job of a rental on this node, now this node's; 204 when there is none."""

    @extend_schema(request=None, responses={200: AgentJobSerializer, 204: None}, tags=["agent"])
    def post(self, request: Request) -> Response:
        claimed = job_services.job_claim(node=self.node)
        if claimed is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        job, placement = claimed
        return Response(
            {
                "id": job.pk,
                "rental": job.rental_id,
                "command": job.command,
                "environment": job.environment,
                "files": job.files,
                "time_limit_seconds": job.time_limit_seconds,
                "accelerator_indices": placement.accelerator_indices,
                "accelerators": max(len(placement.accelerator_indices), 1),
                "metering": placement.rental.metering,
            }
        )


class AgentJobStartSerializer(serializers.Serializer):
    started_at = serializers.DateTimeField()


class AgentJobStateSerializer(serializers.Serializer):
    status = serializers.CharField()
    cancel_requested = serializers.BooleanField()


def _job_state(job: Job) -> dict:
    return {"status": job.status, "cancel_requested": job.cancel_requested_at is not None}


class AgentJobStartView(AgentView):
    @extend_schema(request=AgentJobStartSerializer, responses={200: AgentJobStateSerializer}, tags=["agent"])
    def post(self, request: Request, pk: int) -> Response:
        job = job_services.job_start(node=self.node, job_id=pk, started_at=_object(request.data).get("started_at"))
        return Response(_job_state(job))


class AgentLogChunkSerializer(serializers.Serializer):
    seq = serializers.IntegerField(min_value=0, help_text="numbered by the agent: a chunk sent twice is kept once")
    stream = serializers.ChoiceField(choices=JobLogChunk.Stream.choices)
    text = serializers.CharField(allow_blank=True)


class AgentJobLogSerializer(serializers.Serializer):
    chunks = AgentLogChunkSerializer(many=True)


class AgentJobLogView(AgentView):
    """Output of a running job, in numbered chunks; the answer says whether the buyer asked to stop it."""

    @extend_schema(request=AgentJobLogSerializer, responses={200: AgentJobStateSerializer}, tags=["agent"])
    def post(self, request: Request, pk: int) -> Response:
        job = job_services.job_log_append(node=self.node, job_id=pk, chunks=_object(request.data).get("chunks"))
        return Response(_job_state(job))


class AgentJobFinishSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=job_services.FINISH_STATUS_CHOICES)
    exit_code = serializers.IntegerField(allow_null=True)
    started_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField()


class AgentJobFinishView(AgentView):
    """The job's end: exit status and times. A job already ended keeps its first end."""

    @extend_schema(request=AgentJobFinishSerializer, responses={200: AgentJobStateSerializer}, tags=["agent"])
    def post(self, request: Request, pk: int) -> Response:
        data = _object(request.data)
        job = job_services.job_finish(
            node=self.node,
            job_id=pk,
            status=data.get("status"),
            exit_code=data.get("exit_code"),
            started_at=data.get("started_at"),
            finished_at=data.get("finished_at"),
        )
        return Response(_job_state(job))


class AgentUsageEventsView(AgentView):
    """Usage of the rentals placed on this node, as `POST /api/v1/usage-events/` takes it (same batch, same
    per-event results); events of any other rental are rejected as not found."""

    @extend_schema(tags=["agent"], request=None, responses={200: OpenApiResponse(description="per-event results")})
    def post(self, request: Request) -> Response:
        events = _object(request.data).get("events")
        if not isinstance(events, list) or len(events) > settings.USAGE_EVENT_BATCH_MAX:
            raise exceptions.ValidationError({"events": [_("Send a list of at most %(n)d events.") % {
                "n": settings.USAGE_EVENT_BATCH_MAX}]})  # fmt: skip
        # Only the rentals the node holds now: a node whose rental moved on (it went quiet) reports nothing more of it.
        held = RentalNode.objects.filter(node=self.node, released_at__isnull=True)
        rentals = set(held.values_list("rental_id", flat=True))
        results = usage_events_record(
            provider=self.node.provider, events=events, rental_ids=rentals, node_id=self.node.pk
        )
        return Response(usage_events_summary(results))


# --- The provider's nodes ---


class NodeAcceleratorSerializer(ReadOnlyModelSerializer):
    class Meta:
        model = NodeAccelerator
        fields = ["index", "name", "uuid", "memory_mib", "driver_version", "cuda_version", "compute_capability",
                  "power_limit_w", "mig_enabled"]  # fmt: skip


class NodeSerializer(ReadOnlyModelSerializer):
    accelerators = NodeAcceleratorSerializer(many=True, read_only=True)
    is_live = serializers.BooleanField(read_only=True)
    review_reasons = serializers.SerializerMethodField()

    @extend_schema_field(ReviewReasonSerializer(many=True))
    def get_review_reasons(self, node: Node) -> list[dict]:
        return _review_reasons(node)

    class Meta:
        model = Node
        fields = ["id", "name", "offering", "status", "status_changed_at", "is_live", "hostname", "cpu_model",
                  "cpu_cores", "ram_gb", "disk_gb", "os", "agent_version", "registered_at", "last_heartbeat_at",
                  "telemetry", "needs_review", "review_reasons", "verified_at", "benchmark_requested_at",
                  "accelerators", "created_at"]  # fmt: skip


class NodeDetailSerializer(NodeSerializer):
    benchmarks = serializers.SerializerMethodField()
    reliability = serializers.FloatField(read_only=True, allow_null=True, help_text="uptime share over the window")

    class Meta(NodeSerializer.Meta):
        fields = [*NodeSerializer.Meta.fields, "benchmarks", "reliability"]

    @extend_schema_field(NodeBenchmarkSerializer(many=True))
    def get_benchmarks(self, node) -> list[dict]:
        return NodeBenchmarkSerializer(node.benchmarks.all()[:10], many=True).data


class NodeCreateSerializer(serializers.Serializer):
    offering = serializers.IntegerField(help_text="one of your offerings")
    name = serializers.CharField(max_length=100)


class NodeWithTokenSerializer(NodeSerializer):
    token = serializers.CharField(read_only=True, help_text="shown once: start the agent with it")

    class Meta(NodeSerializer.Meta):
        fields = [*NodeSerializer.Meta.fields, "token"]


class ProviderNodeViewSet(ApprovedProviderMixin, viewsets.ReadOnlyModelViewSet):
    """Your nodes: make one (its agent's token is shown once), see what its agent reports, rotate its token, ask
    for a benchmark, retire it."""

    needs = {
        "list": "provider",
        "retrieve": "provider",
        "create": "provider",  # mints the node's token
        "benchmark": "provider",
        "retire": "provider",
        "rotate_token": "provider",
    }

    filterset_fields = ["offering", "status", "needs_review"]
    ordering_fields = ["created_at", "name", "last_heartbeat_at"]

    def get_serializer_class(self):
        return NodeDetailSerializer if self.action == "retrieve" else NodeSerializer

    def get_queryset(self) -> QuerySet[Node]:
        if getattr(self, "swagger_fake_view", False):
            return Node.objects.none()
        return node_selectors.node_list_for_provider(provider=self.organization)

    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        node = self.get_object()
        node.reliability = node_selectors.node_reliability(node=node)
        return Response(NodeDetailSerializer(node).data)

    def _with_token(self, node: Node, token: str, code: int = status.HTTP_200_OK) -> Response:
        node.token = token
        return Response(NodeWithTokenSerializer(node).data, status=code)

    @extend_schema(request=NodeCreateSerializer, responses={201: NodeWithTokenSerializer})
    def create(self, request: Request) -> Response:
        payload = NodeCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        node, token = node_services.node_create(
            provider=self.organization,
            offering_id=payload.validated_data["offering"],
            name=payload.validated_data["name"],
            actor=request.user,
        )
        return self._with_token(node, token, status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: NodeWithTokenSerializer})
    @action(detail=True, methods=["post"], url_path="rotate-token")
    def rotate_token(self, request: Request, pk: str | None = None) -> Response:
        """A new token; the old one stops working at once."""
        node, token = node_services.node_token_rotate(
            provider=self.organization, node_id=self.get_object().pk, actor=request.user
        )
        return self._with_token(node, token)

    @extend_schema(request=None, responses={200: NodeSerializer})
    @action(detail=True, methods=["post"])
    def benchmark(self, request: Request, pk: str | None = None) -> Response:
        """Ask the agent to benchmark again at its next heartbeat."""
        node = node_services.node_benchmark_request(provider=self.organization, node_id=self.get_object().pk)
        return Response(NodeSerializer(node).data)

    @extend_schema(request=None, responses={200: NodeSerializer})
    @action(detail=True, methods=["post"])
    def retire(self, request: Request, pk: str | None = None) -> Response:
        node = node_services.node_retire(provider=self.organization, node_id=self.get_object().pk, actor=request.user)
        return Response(NodeSerializer(node).data)


# --- The buyer's jobs ---


class JobSerializer(ReadOnlyModelSerializer):
    class Meta:
        model = Job
        fields = ["id", "rental", "name", "command", "time_limit_seconds", "status", "exit_code", "started_at",
                  "finished_at", "cancel_requested_at", "log_bytes", "log_truncated", "created_at"]  # fmt: skip


class JobCreateSerializer(serializers.Serializer):
    rental = serializers.IntegerField()
    name = serializers.CharField(max_length=100, required=False, allow_blank=True)
    command = serializers.ListField(child=serializers.CharField(trim_whitespace=False), min_length=1,
                                    help_text='argv, run without a shell: ["python", "-c", "print(1)"]')  # fmt: skip
    environment = serializers.DictField(child=serializers.CharField(allow_blank=True, trim_whitespace=False),
                                        required=False)  # fmt: skip
    files = serializers.DictField(child=serializers.CharField(), required=False,
                                  help_text="relative path → base64 content, 1 MiB in all by default")  # fmt: skip
    time_limit_seconds = serializers.IntegerField(min_value=1, required=False)


class JobLogEntrySerializer(ReadOnlyModelSerializer):
    class Meta:
        model = JobLogChunk
        fields = ["seq", "stream", "text", "at"]


class JobViewSet(OrganizationScopedMixin, viewsets.ReadOnlyModelViewSet):
    """Jobs on your rentals' nodes: submit a command, read its output as it comes, cancel it."""

    needs = {"list": "read", "retrieve": "read", "log": "read", "create": "rent", "cancel": "rent"}

    serializer_class = JobSerializer
    filterset_fields = ["rental", "status"]
    ordering_fields = ["created_at"]

    def get_queryset(self) -> QuerySet[Job]:
        if getattr(self, "swagger_fake_view", False):
            return Job.objects.none()
        return node_selectors.job_list(organization=self.organization)

    @extend_schema(request=JobCreateSerializer, responses={201: JobSerializer})
    def create(self, request: Request) -> Response:
        payload = JobCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        data = payload.validated_data
        job = job_services.job_submit(
            organization=self.organization,
            rental_id=data["rental"],
            command=data["command"],
            environment=data.get("environment"),
            files=data.get("files"),
            time_limit_seconds=data.get("time_limit_seconds"),
            name=data.get("name", ""),
            created_by=request.user,
        )
        return Response(JobSerializer(job).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[OpenApiParameter("after", int, description="only chunks with a larger seq (poll with the last)")],
        responses={200: JobLogEntrySerializer(many=True)},
    )
    @action(detail=True, methods=["get"])
    def log(self, request: Request, pk: str | None = None) -> Response:
        """The job's output so far, in order; `?after=<seq>` for what came since."""
        job = self.get_object()
        try:
            after = int(request.query_params.get("after", -1))
        except ValueError:
            raise exceptions.ValidationError({"after": [_("A whole number.")]}) from None
        chunks = node_selectors.job_log(job=job, after=after)
        return Response(JobLogEntrySerializer(chunks, many=True).data)

    @extend_schema(request=None, responses={200: JobSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        job = job_services.job_cancel(organization=self.organization, job_id=self.get_object().pk)
        return Response(JobSerializer(job).data)

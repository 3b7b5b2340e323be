"""Run the demo model server (`marketplace.demo_model`): a demo provider's OpenAI-compatible upstream."""

from django.core.management.base import BaseCommand, CommandError

from marketplace.demo_model.server import DEMO_MODELS, DemoModelServer, DemoModelSettings


class Command(BaseCommand):
    help = "Serve the demo model (OpenAI-compatible chat with streaming, and embeddings) for the demo model services."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8001)
        parser.add_argument("--ttft-ms", type=float, default=200, help="time to the first token, in milliseconds")
        parser.add_argument("--tokens-per-second", type=float, default=40, help="pace of a reply (0: no pacing)")
        parser.add_argument("--reply-tokens", type=int, default=48, help="a reply's length unless max_tokens cuts it")
        parser.add_argument("--api-key", default="", help="the bearer token it requires (default: none)")
        parser.add_argument(
            "--model", action="append", metavar="NAME=chat|embeddings",
            help=f"a model to serve (repeatable; default: {', '.join(DEMO_MODELS)})",
        )  # fmt: skip

    def handle(self, *args, host: str, port: int, **options) -> None:
        settings = DemoModelSettings(
            models=self._models(options["model"]),
            time_to_first_token=options["ttft_ms"] / 1000,
            tokens_per_second=options["tokens_per_second"],
            reply_tokens=options["reply_tokens"],
            api_key=options["api_key"],
        )
        server = DemoModelServer((host, port), settings)
        self.stdout.write(f"Demo model serving {', '.join(settings.models)} at http://{host}:{port}/v1 (Ctrl-C stops)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()

    @staticmethod
    def _models(given: list[str] | None) -> dict[str, str]:
        if not given:
            return dict(DEMO_MODELS)
        models = {}
        for item in given:
            name, _, modality = item.partition("=")
            if not name or modality not in {"chat", "embeddings"}:
                raise CommandError(f"--model takes NAME=chat or NAME=embeddings, not {item!r}")
            models[name] = modality
        return models

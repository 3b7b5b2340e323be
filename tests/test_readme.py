import re
from pathlib import Path

from django.conf import settings

CODE_DIRS = ["marketplace", "accounts", "billing"]
ENV_READ = re.compile(r'(?:os\.environ\.get|env_bool|env_int|env_list)\(\s*"([A-Z_]+)"')


def test_every_environment_variable_the_code_reads_is_in_the_readme():
    base = Path(settings.BASE_DIR)
    readme = (base / "README.md").read_text(encoding="utf-8")
    names = {
        name for d in CODE_DIRS for path in (base / d).rglob("*.py") for name in ENV_READ.findall(path.read_text())
    }
    assert names
    assert sorted(name for name in names if f"`{name}`" not in readme) == []

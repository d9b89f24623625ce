import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scriptrun.k8s import lazy_client  # noqa: E402

# what the operator does first (cli.py): the tests use kubernetes_asyncio through the same stand-ins
lazy_client.install()

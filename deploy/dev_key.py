"""The cluster's development key, as `make run` creates it (see deploy/cluster.py)."""

from app.core.config import Settings
from app.serve import prepare_development

if __name__ == "__main__":
    prepare_development(Settings())

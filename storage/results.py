"""Recording a task's outcome: its result row and its recordings as acquisitions."""

import json
from collections.abc import Iterable
from pathlib import Path

from .models import Acquisition, TaskResult


def add_recordings(result: TaskResult, meta_paths: Iterable[Path], data_dir: Path) -> None:
    """Attach the SigMF recordings ``meta_paths`` (each beside its ``.sigmf-data``,
    inside ``data_dir``) to ``result``, in order."""
    for meta_path in meta_paths:
        meta_path = Path(meta_path)
        data_path = meta_path.with_suffix(".sigmf-data")
        result.acquisitions.append(
            Acquisition(
                recording_id=len(result.acquisitions),
                sigmf_metadata=json.loads(meta_path.read_text()),
                data_path=str(data_path.resolve().relative_to(data_dir.resolve())),
                data_size=data_path.stat().st_size,
            )
        )

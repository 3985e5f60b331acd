"""The MLflow pyfunc model of a package (MLflow "models from code"): the same package folder,
logged as the artifact ``package``, applied by :func:`mripipe.infer.run.infer_scan`.

``mlflow.pyfunc.load_model("models:/lesion_seg@champion").predict(frame)`` takes a DataFrame with
one row per scan: one column per channel (the package's channel names, image paths) and
``out_dir``; it returns one row per scan with ``out_dir``, ``outputs`` and the task's summary
(``lesion_volume_ml`` or ``class`` and ``prob_<label>``). No network is pickled: MLflow logs this
file and the package folder, and ``learn.package`` refers to this file by path.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


class PackageModel(PythonModel):
    """A pyfunc wrapper around an mripipe model package."""

    def load_context(self, context: Any) -> None:
        """Load the package from the model's ``package`` artifact (CPU, or the first GPU)."""
        import torch

        from mripipe.infer.apply import load_package

        device = "cuda:0" if torch.cuda.is_available() else "cpu"
        self.package = load_package(context.artifacts["package"], device=device)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
                ) -> pd.DataFrame:
        """Apply the package to each row's raw channel images; outputs go to the row's ``out_dir``."""
        from mripipe.infer.run import infer_scan

        names = self.package.channels
        missing = [c for c in [*names, "out_dir"] if c not in model_input.columns]
        if missing:
            raise ValueError(f"model input needs columns {names + ['out_dir']}; missing {missing}")
        rows = []
        for _, row in model_input.iterrows():
            doc = infer_scan(self.package, [row[c] for c in names], row["out_dir"])
            out = {"out_dir": row["out_dir"], "outputs": ",".join(doc["outputs"])}
            if "probabilities" in doc:
                out |= {"class": doc["class"], **{f"prob_{k}": v for k, v in doc["probabilities"].items()}}
            else:
                out["lesion_volume_ml"] = doc["lesion_volume_ml"]
            rows.append(out)
        return pd.DataFrame(rows)


set_model(PackageModel())

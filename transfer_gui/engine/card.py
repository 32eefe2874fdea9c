"""The model card: README.md in every bundle, so a model found on disk or on the Hugging Face Hub
says what it is, what it was trained on, how well it did, how to load it, and where it fails."""

from __future__ import annotations

from typing import Any

from .catalog import get_info

__all__ = ["model_card"]


def _table(rows: list[list[Any]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _front_matter(metadata: dict, name: str, base: str, hf_licence: str, labels: list[str]) -> str:
    """The card's YAML header, written by huggingface_hub (``ModelCardData``) so the Hub reads it:
    its ``model-index`` holds the accuracy and macro-F1 the body states, which the Hub shows beside
    the model. The figures are the cross-validated estimate when there is one, else the held-out
    evaluation's."""
    from huggingface_hub import EvalResult, ModelCardData

    evaluation = metadata.get("evaluation") or {}
    estimate = metadata.get("estimate") or {}
    figures = estimate or evaluation
    results = None
    if figures.get("accuracy") is not None:
        how = "cross-validated" if estimate.get("method") == "cross-validation" else "held-out"
        data = dict(task_type="image-classification", task_name="Image classification", dataset_type="imagefolder",
                    dataset_name=f"{len(labels)} classes, {figures.get('n_images', '?')} images ({how})")
        results = [EvalResult(metric_type="accuracy", metric_name=f"Accuracy ({how})",
                              metric_value=round(float(figures["accuracy"]), 4), **data)]
        if figures.get("macro_f1") is not None:
            results.append(EvalResult(metric_type="f1", metric_name=f"Macro-F1 ({how})", metric_config="macro",
                                      metric_value=round(float(figures["macro_f1"]), 4), **data))
    card = ModelCardData(library_name="timm", license=hf_licence, pipeline_tag="image-classification",
                         tags=["image-classification", "timm", "transfer-learning-studio"],
                         base_model=base if base.startswith("timm/") else None,
                         model_name=f"{name} fine-tuned on {', '.join(labels)}"[:200], eval_results=results)
    return f"---\n{card.to_yaml()}\n---"


def model_card(metadata: dict) -> str:
    """Markdown with Hugging Face front matter, from a bundle's ``transfer_gui.json`` metadata.

    Sections: base model and licence, labels, data (counts, skipped files), training settings and
    seed, validation metrics per class, calibration, library versions, intended use and limits,
    and loading with timm in three lines.
    """
    name = metadata.get("model_name") or "unknown"
    info = get_info(name)
    labels = list(metadata.get("labels") or [])
    counts = (metadata.get("dataset") or {}).get("counts") or {}
    base = f"timm/{name}" if "." in name and not name.startswith(("local-dir:", "hf-hub:")) else name
    out = [_front_matter(metadata, name, base, info.licence.lower() if info else "other", labels), ""]
    out += _base_section(metadata, name, info, labels)
    out += _data_section(metadata, counts)
    out += _settings_section(metadata)
    out += _results_section(metadata)
    out += _calibration_section(metadata.get("calibration") or {})
    out += _usage_section(metadata, labels, counts)
    return "\n".join(out)


def _base_section(metadata: dict, name: str, info, labels: list[str]) -> list[str]:
    licence = info.licence if info else "see the base model's licence"
    how = ("quick: only the last layer was trained" if (metadata.get("training") or {}).get("mode") == "quick"
           else "fine-tuned: the whole network was trained")
    return [f"# Image classifier: {', '.join(labels)}", "",
            f"Fine-tuned from **{info.title if info else name}** (`{name}`) with Transfer Learning Studio ({how}).",
            "", "## Base model", "",
            f"- timm name: `{name}`",
            f"- weights: {info.source if info else metadata.get('weights_source') or 'unknown'}",
            f"- pretrained on: {info.trained_on if info else 'see the base model card'}",
            f"- licence of the base weights: {licence} (this fine-tuned model inherits it)", "",
            "## Labels", "", ", ".join(f"`{label}`" for label in labels) + f" ({len(labels)} classes)", ""]


def _data_section(metadata: dict, counts: dict) -> list[str]:
    dataset, split = metadata.get("dataset") or {}, metadata.get("split") or {}
    skipped = dataset.get("skipped") or []
    out = ["## Training data", ""]
    if counts:
        out += [_table([[k, v] for k, v in counts.items()], ["class", "images"]), ""]
        if (metadata.get("estimate") or {}).get("trained_on_all_images"):
            out += [f"{sum(counts.values())} images, all of them used to train the final model.", ""]
        elif split:
            out += [f"{sum(counts.values())} images; {split.get('train', '?')} used for training and "
                    f"{split.get('val', '?')} held out to check it.", ""]
    if skipped:
        out.append(f"{len(skipped)} file(s) were skipped while reading the data:")
        out += [f"- `{s['path']}`: {s['reason']}" for s in skipped[:20]]
        if len(skipped) > 20:
            out.append(f"- ... and {len(skipped) - 20} more")
        out.append("")
    out += [f"- Warning: {warning}" for warning in (dataset.get("warnings") or []) + (split.get("warnings") or [])]
    return out


def _settings_section(metadata: dict) -> list[str]:
    training = metadata.get("training") or {}
    rows = [[k, ("automatic" if k in ("epochs", "lr", "loader_workers") else "none") if v is None else f"`{v}`"]
            for k, v in training.items()]
    return ["", "## Training settings", "", _table(rows, ["setting", "value"]), "",
            f"Seed: `{metadata.get('seed')}`. Training time: {metadata.get('train_seconds', '?')} s."
            + (" Stopped early by the user." if metadata.get("stopped_by_user") else ""),
            "", (metadata.get("estimate") or {}).get("note", ""), ""]


def _results_section(metadata: dict) -> list[str]:
    evaluation, estimate = metadata.get("evaluation") or {}, metadata.get("estimate") or {}
    out = ["## How well it did", ""]
    if not evaluation:
        return out + ["Not evaluated.", ""]
    if estimate:
        low, high = estimate.get("interval") or (0, 1)
        how = (f"{estimate.get('folds')}-fold cross-validation on all {estimate.get('n_images')} images: every "
               "image was judged by a model trained on the other folds" if estimate.get("method") == "cross-validation"
               else f"{estimate.get('n_images')} held-out images")
        out += [f"Accuracy **{estimate.get('accuracy', 0):.1%}** ({estimate.get('interval_kind', 'interval')} "
                f"{low:.1%}-{high:.1%}), macro-F1 {estimate.get('macro_f1', 0):.3f}, expected calibration error "
                f"{estimate.get('ece', float('nan')):.3f}; measured by {how}.", ""]
    else:
        out += [f"Accuracy **{evaluation.get('accuracy', 0):.1%}**, macro-F1 {evaluation.get('macro_f1', 0):.3f} "
                f"on {evaluation.get('n_images', '?')} held-out images.", ""]
    per_class = evaluation.get("per_class") or {}
    return out + [_table([[k, f"{v['precision']:.2f}", f"{v['recall']:.2f}", f"{v['f1']:.2f}", v["support"]]
                          for k, v in per_class.items()], ["class", "precision", "recall", "F1", "images"]), ""]


def _calibration_section(calibration: dict) -> list[str]:
    if calibration and calibration.get("fitted", True):
        return [f"Confidences are calibrated by temperature scaling (T = {calibration.get('temperature', 1):.3f}, "
                f"fitted on {calibration.get('n_images', '?')} predictions for images the model had not learned "
                f"from; log-loss of the top answer {calibration.get('nll_before', float('nan')):.3f} → "
                f"{calibration.get('nll_after', float('nan')):.3f}). Divide the logits by T before the softmax "
                "to get the confidences the app showed.", ""]
    if calibration:
        return [f"Confidences are the model's own, not calibrated: there were {calibration.get('n_images', 0)} "
                "checked predictions, too few to fit a temperature.", ""]
    return []


def _usage_section(metadata: dict, labels: list[str], counts: dict) -> list[str]:
    versions = metadata.get("versions") or {}
    return ["## How to use", "", "```python",
            "import timm, torch",
            'model = timm.create_model("hf-hub:USER/REPO", pretrained=True).eval()  # or "local-dir:PATH/TO/THIS/FOLDER"',
            "probs = model(timm.data.create_transform(**timm.data.resolve_model_data_config(model))(img).unsqueeze(0)).softmax(-1)",
            "```", "",
            "`img` is a PIL image in RGB; the class names, in output order, are in `config.json` "
            "(`label_names`). With Transfer Learning Studio installed (`pip install .` in its repository), "
            "`transfer-gui predict FOLDER photo.jpg` does the same from a terminal (with the calibration "
            "applied).", "",
            "## Intended use and limits", "",
            f"- Made to tell apart these {len(labels)} classes in pictures like the training images. Loaded "
            "with timm as above it always answers with one of them, even for a picture of something else. "
            + ("`transfer-gui predict` and the app answer \"not one of your classes\" for a picture further "
               "from every training picture than 98 % of them are from the rest (`novelty.safetensors`, "
               "the `novelty` column); it catches pictures of another kind (photos for a model of drawings) "
               "far more often than a new class of the same kind. "
               if metadata.get("novelty") else "")
            + "Use a confidence threshold (the app's \"not sure\") where a wrong answer matters.",
            f"- Trained on {sum(counts.values()) if counts else 'few'} images; the figures above are estimates "
            "from those same few images (the interval says how rough). Measure it on new pictures before "
            "relying on it.",
            "- It inherits the biases of the base model's pretraining data and of the training images. "
            "Do not use it for decisions about people, or where a mistake causes harm.", "",
            "## Software", "",
            ", ".join(f"{k} {v}" for k, v in versions.items()) + f". Bundle created {metadata.get('created', '?')}.", ""]

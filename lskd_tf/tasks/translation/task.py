"""The translation task: the papers' third experiment family on the same machinery.

Transformer teachers with and without label smoothing on target tokens, word-level
distillation at any temperature through the same `Distiller`, `TrainConfig`, sweep,
resume and results code as images. What is translation-specific is here:

* data: `lskd_tf.tasks.translation.data` (the embedded synthetic corpus, IWSLT-layout
  text files, TFDS sets), batches ``({"source", "target_in"}, target_out, mask)``; the
  padding mask is the batch's ``sample_weight``, so every loss and metric (token
  accuracy, ``top1``) counts real tokens only;
* models: `lskd_tf.tasks.translation.models` (Transformer encoder-decoders by name);
* BLEU: after training, `final_metrics` decodes the BLEU split with ``best.keras`` and
  ``last.keras`` (beam search, `decoding`) and scores it twice (`bleu`): ``test_bleu``,
  sacreBLEU 13a on detokenized text (the tables' default headline), and
  ``test_bleu_tokenized``, fairseq's tokenized BLEU (the papers' number; the papers'
  flagfiles headline it with ``--headline_metric=bleu_tokenized``), each with sacreBLEU's
  signature.

Evaluation settings travel with the data (`DataSpec.options`, so they are part of a
run's identity): ``max_tokens`` (token-budget batches; otherwise sentence batches of the
run's batch size), ``beam_size`` (default 4), ``length_penalty`` (default 1, fairseq's),
``bleu_split`` (default the test split), ``bleu_sentences`` (score only the first N
sentences; default all) and ``bleu_text`` (how the dataset stores its text,
`bleu.TEXT_FORMATS`; default `data.text_format`: ``moses`` for iwslt14, ``raw`` otherwise).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import keras

from lskd_tf import tasks
from lskd_tf.checksums import file_sha256, weights_sha256
from lskd_tf.tasks.translation import bleu, data, decoding, models, sequence_kd, serving
from lskd_tf.tasks.translation import teacher_cache as translation_cache

DECODE_BATCH = 64


class Translation(tasks.Task):
    """Translate a source sentence into a target sentence, token by token."""

    name = "translation"
    monitor = "top1"  # teacher-forced token accuracy picks best.keras (cheap, every epoch)
    headline = "bleu"
    metric_labels = {
        "bleu": "BLEU (sacreBLEU 13a on detokenized text)",
        "bleu_tokenized": "tokenized BLEU (fairseq's: Moses tokens, no smoothing)",
    }

    # ------------------------------------------------------------------ data

    def datasets(self) -> list[str]:
        return data.available()

    def check_dataset(self, spec) -> None:
        super().check_dataset(spec)
        options, evaluation = data.split_options(spec.options)
        data.check_options(
            spec.name, data_dir=spec.data_dir, max_tokens=evaluation["max_tokens"], **options
        )
        bleu.check_text_format(data.text_format(spec.name, evaluation["bleu_text"]))

    def data_options(self, name: str) -> list[str]:
        """The dataset's own options and the evaluation options (`data.option_names`)."""
        self._check_dataset_name(name)
        return data.option_names(name)

    def dataset_info(self, spec) -> data.TranslationInfo:
        options, _ = data.split_options(spec.options)
        return data.get_info(spec.name, data_dir=spec.data_dir, **options)

    def data_fingerprint(self, spec) -> dict:
        """The sentences' and the vocabulary's fingerprint (`data.fingerprint`)."""
        options, _ = data.split_options(spec.options)
        return data.fingerprint(spec.name, data_dir=spec.data_dir, **options)

    def train_fn(self, spec, *, batch_size: int, seed: int) -> Callable:
        options, evaluation = data.split_options(spec.options)
        budget = evaluation["max_tokens"]
        return data.train_fn(
            spec.name, data_dir=spec.data_dir, seed=seed, max_tokens=budget,
            batch_size=None if budget else batch_size, **options,
        )  # fmt: skip

    def eval_dataset(self, spec, *, batch_size: int):
        options, _ = data.split_options(spec.options)
        return data.eval_dataset(
            spec.name, batch_size=batch_size, data_dir=spec.data_dir, **options
        )

    # ------------------------------------------------------------------ models

    def models(self) -> list[str]:
        return models.available()

    def build_model(self, name: str, info, *, train, synchronized_bn: bool) -> keras.Model:
        return models.get(name, info.vocab_size, info.max_length)

    def load_model(self, path: str | os.PathLike, info) -> keras.Model:
        model = super().load_model(path, info)
        if info is not None and model.output_shape[-1] != info.vocab_size:
            raise ValueError(
                f"checkpoint {path} predicts {model.output_shape[-1]} tokens but the "
                f"vocabulary of {info.name} has {info.vocab_size}: it was trained with "
                "another vocabulary"
            )
        return model

    def check_teacher_cache(self, cache, spec) -> None:
        """Translation caches the teacher's logits per target token ('exact' mode only)."""
        translation_cache.check(cache)

    def cached_train_fn(
        self, teacher: keras.Model, teacher_path: Path, cache, spec, *, batch_size: int,
        seed: int, verbose: bool, kd_topk: int = 0,
    ) -> tuple[Callable, dict]:  # fmt: skip
        """Training batches carrying the teacher's cached logits (`teacher_cache`); with
        ``kd_topk``, only its top ``kd_topk`` ids and logits per token, sparse."""
        options, evaluation = data.split_options(spec.options)
        budget = evaluation["max_tokens"]
        info = self.dataset_info(spec)
        return translation_cache.cached_train_fn(
            teacher, teacher_path, cache, spec, options=options, vocab_size=info.vocab_size,
            kd_topk=kd_topk, seed=seed, max_tokens=budget,
            batch_size=None if budget else batch_size,
        )  # fmt: skip

    def check_sequence_level(self, spec) -> None:
        """Every translation dataset can train on a teacher's translations."""

    def sequence_level_train_fn(
        self, teacher: keras.Model, teacher_path: Path, spec, *, batch_size: int, seed: int,
        verbose: bool,
    ) -> tuple[Callable, dict]:  # fmt: skip
        """Training batches whose targets are the teacher's beam-search translations of
        the training sources (`sequence_kd`), decoded once per teacher checkpoint."""
        target_ids, described = sequence_kd.teacher_translations(
            teacher, teacher_path, spec, verbose=verbose
        )
        options, evaluation = data.split_options(spec.options)
        budget = evaluation["max_tokens"]
        train_fn = data.train_fn(
            spec.name, data_dir=spec.data_dir, seed=seed, max_tokens=budget,
            batch_size=None if budget else batch_size, target_ids=target_ids, **options,
        )  # fmt: skip
        return train_fn, described

    # ------------------------------------------------------------------ after training

    def translate(self, model: keras.Model, spec, info, split: str | None = None) -> dict:
        """Decode a split with ``model``: hypotheses and references (as the dataset stores
        its text), both BLEUs and their signatures (`bleu.score`)."""
        options, evaluation = data.split_options(spec.options)
        split = split or evaluation["bleu_split"] or info.test_split
        references = data.references(spec.name, split, data_dir=spec.data_dir, **options)
        count = int(evaluation["bleu_sentences"] or len(references))
        references = references[:count]
        hypothesis_ids: list = []
        # The sources exactly as training saw them (same tokenization and truncation).
        batches = data.eval_dataset(
            spec.name, split, batch_size=DECODE_BATCH, data_dir=spec.data_dir, **options
        )
        for x, _, _ in batches:
            if len(hypothesis_ids) >= count:
                break
            hypothesis_ids += decoding.translate_ids(
                model, x["source"].numpy(), beam_size=int(evaluation["beam_size"]),
                max_length=info.max_length, length_penalty=float(evaluation["length_penalty"]),
            )  # fmt: skip
        hypotheses = info.vocabulary().decode_batch(hypothesis_ids[:count])
        text_format = data.text_format(spec.name, evaluation["bleu_text"])
        scores = bleu.score(
            hypotheses, references, text_format=text_format, language=info.target_language
        )
        return {**scores, "split": split, "text_format": text_format,
                "hypotheses": hypotheses, "references": references}  # fmt: skip

    def final_metrics(self, run, spec, info) -> dict:
        """Both BLEUs of ``best.keras`` and ``last.keras``, with sacreBLEU's signatures.

        Recorded as ``test_bleu`` (sacreBLEU 13a, detokenized) and
        ``test_bleu_tokenized`` (fairseq's tokenized BLEU) on the default ``bleu_split``,
        the test split (the papers' number; ``best.keras`` is picked on the validation
        split's token accuracy), or ``val_bleu`` / ``val_bleu_tokenized`` with
        ``bleu_split`` = the validation split (`bleu_key`), as score / 100, so that every
        run.json metric is a fraction; tables multiply by 100 and show the usual BLEU.
        Runs recorded before the tokenized BLEU existed are left out of its tables
        (`results`).

        When the last epoch is the best one, both files hold the same weights and the
        decoding (deterministic) is done once for both: it is most of a quick run's time
        outside its epochs. ``best.keras`` is then a byte copy of ``last.keras``
        (`lskd_tf.callbacks.Checkpoints`), and the file is loaded once too."""
        found = {}
        decoded_by_weights: dict[str, dict] = {}  # keyed by weights_sha256
        decoded_by_file: dict[str, dict] = {}  # keyed by file_sha256
        for which in ("best", "last"):
            path = run.checkpoint(which)
            digest = file_sha256(path)
            if digest not in decoded_by_file:  # a file not read yet: load it
                model = self.load_model(path, info)
                weights = weights_sha256(model)
                if weights not in decoded_by_weights:
                    decoded_by_weights[weights] = self.translate(model, spec, info)
                decoded_by_file[digest] = decoded_by_weights[weights]
            decoded = decoded_by_file[digest]
            found[which] = {
                # A fraction, like every metric in run.json (the tables show x100: BLEU).
                bleu_key(decoded["split"], info): float(decoded["bleu"]) / 100.0,
                bleu_key(decoded["split"], info, "bleu_tokenized"): (
                    float(decoded["bleu_tokenized"]) / 100.0
                ),
                "bleu_signature": decoded["signature"],
                "bleu_tokenized_signature": decoded["tokenized_signature"],
                "bleu_text": decoded["text_format"],
                "bleu_split": decoded["split"],
            }
        return found

    def export(self, model: keras.Model, export_dir: str | os.PathLike, info, spec=None) -> Path:
        """A SavedModel whose ``translate`` signature maps sentences to translations
        (tokenizer and beam search inside; `serving`), plus ``model.keras`` and the
        vocabulary. It decodes as `translate` (BLEU) does: the dataset's ``max_length``
        and the run's ``beam_size`` / ``length_penalty`` (the DataSpec ``spec``'s evaluation
        options; their defaults without it)."""
        if info is None:
            raise ValueError(
                "exporting a translation model needs its dataset (the vocabulary): pass "
                "--task=translation and the --dataset (and options) it was trained on"
            )
        _, evaluation = data.split_options(spec.options if spec is not None else ())
        return serving.export(
            model, info.vocabulary(), export_dir, max_length=info.max_length,
            beam_size=int(evaluation["beam_size"]),
            length_penalty=float(evaluation["length_penalty"]),
        )  # fmt: skip

    def analyze(
        self, run_dirs: list[Path], out_dir: Path, *, tensorboard_dir: Path | None, title: str
    ) -> Path | None:
        """Token-level calibration, stability and diffusion (`analysis`), one report."""
        from lskd_tf.tasks.translation.analysis import analyze_runs

        return analyze_runs(self, run_dirs, out_dir, tensorboard_dir=tensorboard_dir, title=title)


def bleu_key(split: str, info, metric: str = "bleu") -> str:
    """run.json's name of a BLEU on ``split``: ``test_bleu``, ``val_bleu`` or
    ``<split>_bleu`` (``metric="bleu_tokenized"``: ``test_bleu_tokenized``, ...).

    Runs recorded before this rule named test-split BLEU ``val_bleu`` (their
    ``bleu_split`` says ``test``); `lskd_tf.results` reads both.
    """
    prefix = {info.test_split: "test", info.eval_split: "val"}.get(split, split)
    return f"{prefix}_{metric}"


tasks.register(Translation())

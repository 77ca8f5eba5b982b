# ruff: noqa: E501  (one mutant per line: the exact source text and its replacement)
"""Hand-made mutants (issue 13's list and those found by mutmut): apply each to a scratch copy, run its pin tests,
expect a failure, restore.

Usage: git archive HEAD | tar -x -C /tmp/scratch && python benchmarks/mutation/hand_mutants.py /tmp/scratch [NAME ...]
Never run it on the working tree: it rewrites source files (and restores them) in the copy it is given.
"""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(sys.argv[1]).resolve()
if pathlib.Path(__file__).resolve().parents[2] == ROOT or (ROOT / ".git").exists():
    sys.exit(f"{ROOT} looks like a checkout: pass a scratch copy (git archive HEAD | tar -x -C DIR)")
PY = sys.executable
env = dict(os.environ, TRITON_INTERPRET="1", PYTHONHASHSEED="0", OMP_NUM_THREADS="1")
CR = "tests/test_criterion_reference.py"
MUTANTS = [
    (
        "text-pos-neg-swapped",
        "scatloss/criterion.py",
        "[pos[n] for n in self.textural_layers],\n                    [neg[n] for n in self.textural_layers],",
        "[neg[n] for n in self.textural_layers],\n                    [pos[n] for n in self.textural_layers],",
        [CR + "::test_textural_term_pulls_towards_the_ground_truth_not_the_corrupted_input"],
    ),
    (
        "sem-positive-from-corrupted",
        "scatloss/criterion.py",
        "self._pool(pos[name]), sem_negs)",
        "self._pool(neg[name]), sem_negs)",
        [CR + "::test_semantic_positive_is_the_ground_truth"],
    ),
    (
        "negatives-mask-b-image-j",
        "scatloss/criterion.py",
        'b_idx = torch.div(index, m, rounding_mode="floor")\n        mask = masks[index % m] if shared else masks[index]',
        'b_idx = index % m\n        mask = masks[torch.div(index, m, rounding_mode="floor")] if shared else masks[index]',
        [CR + "::test_batch_negatives_are_image_b_with_mask_j"],
    ),
    (
        "negatives-M-share-first-M-masks",
        "scatloss/criterion.py",
        "mask = masks[index % m] if shared else masks[index]",
        "mask = masks[index % m]",
        [CR + "::test_sampled_negatives_use_every_drawn_mask_in_row_major_order"],
    ),
    (
        "fill-ignored-corrupted",
        "scatloss/criterion.py",
        "corrupted = SF.corrupt(image, hole, fill=self.fill)",
        "corrupted = SF.corrupt(image, hole)",
        [CR + "::test_fill_reaches_the_corrupted_input_and_the_negatives"],
    ),
    (
        "fill-ignored-negatives",
        "scatloss/criterion.py",
        "return SF.corrupt(image[b_idx], mask.to(image.dtype), fill=self.fill)",
        "return SF.corrupt(image[b_idx], mask.to(image.dtype))",
        [CR + "::test_fill_reaches_the_corrupted_input_and_the_negatives"],
    ),
    (
        "relu-dropped-from-relu_sum",
        "scatloss/criterion.py",
        "return torch.relu(feature).sum(dim=dims)",
        "return feature.sum(dim=dims)",
        [CR + "::test_semantic_map_pooling"],
    ),
    (
        "evaluate-scores-raw-prediction",
        "scatloss/evaluate.py",
        "yield batch, hole, assigned, composite(prediction.to(batch.dtype), batch, hole)",
        "yield batch, hole, assigned, prediction.to(batch.dtype)",
        ["tests/test_mutation_pins.py::test_evaluate_scores_the_composite_not_the_raw_prediction"],
    ),
    (
        "lama-extra-weight-ignored",
        "scatloss/adapters/lama.py",
        "per_patch = per_patch * (1.0 + m * self.extra_mask_weight_for_gen)",
        "per_patch = per_patch * (1.0 + m)",
        ["tests/test_mutation_pins.py::test_lama_generator_patch_weights"],
    ),
    (
        "lama-weighting-skipped",
        "scatloss/adapters/lama.py",
        "if (self.mask_as_fake_target and self.extra_mask_weight_for_gen > 0) or not self.use_unmasked_for_gen:",
        "if False:",
        ["tests/test_mutation_pins.py::test_lama_generator_patch_weights"],
    ),
    (
        "lama-use-unmasked-inverted",
        "scatloss/adapters/lama.py",
        "            if not self.use_unmasked_for_gen:\n                per_patch = per_patch * m",
        "            if self.use_unmasked_for_gen:\n                per_patch = per_patch * m",
        ["tests/test_mutation_pins.py::test_lama_generator_patch_weights"],
    ),
    (
        "lama-extra-weight-without-mask-target",
        "scatloss/adapters/lama.py",
        "if (self.mask_as_fake_target and self.extra_mask_weight_for_gen > 0) or not self.use_unmasked_for_gen:",
        "if self.extra_mask_weight_for_gen > 0 or not self.use_unmasked_for_gen:",
        ["tests/test_mutation_pins.py::test_lama_generator_patch_weights"],
    ),
    (
        "triton-integer-height-only",
        "scatloss/ops/scat.py",
        "(h > H or w > W or H % h or W % w)",
        "(h > H or w > W or (H % h and W % w))",
        ["tests/test_ops.py::test_segmenter_mask_sizes_without_an_integer_factor_fall_back_and_agree"],
    ),
    (
        "sampler-cache-key-None",
        "scatloss/criterion.py",
        "key = (height, width)",
        "key = None",
        [CR + "::test_default_sampler_is_a_seeded_mask_generator_per_image_size"],
    ),
    (
        "sampler-seed-ignored",
        "scatloss/criterion.py",
        "MaskGenerator(height, width, seed=self.seed)",
        "MaskGenerator(height, width)",
        [CR + "::test_default_sampler_is_a_seeded_mask_generator_per_image_size"],
    ),
    (
        "sampler-count-unchecked",
        "scatloss/criterion.py",
        'masks = check_hole(masks, batch=n, name="mask_sampler(...)"',
        'masks = check_hole(masks, name="mask_sampler(...)"',
        [CR + "::test_mask_sampler_returning_the_wrong_number_of_masks_raises"],
    ),
    (
        "sampler-name-upper",
        "scatloss/criterion.py",
        'masks = check_hole(masks, batch=n, name="mask_sampler(...)"',
        'masks = check_hole(masks, batch=n, name="MASK_SAMPLER(...)"',
        [CR + "::test_mask_sampler_returning_the_wrong_number_of_masks_raises"],
    ),
    (
        "dstep-or-instead-of-and",
        "scatloss/criterion.py",
        "if want_adv or (want_scat and self.segmenter is None):",
        "if want_adv or (want_scat or self.segmenter is None):",
        [CR + "::test_discriminator_step_with_only_the_scat_term"],
    ),
    (
        "dstep-is-not-None",
        "scatloss/criterion.py",
        "if want_adv or (want_scat and self.segmenter is None):",
        "if want_adv or (want_scat and self.segmenter is not None):",
        [CR + "::test_discriminator_step_with_only_the_scat_term"],
    ),
    (
        "dstep-real-label",
        "scatloss/criterion.py",
        'kwargs["real_logits"] = _select(real_out, self.global_output, "global_output")',
        'kwargs["real_logits"] = _select(real_out, self.global_output, "XXglobal_outputXX")',
        [CR + "::test_a_missing_head_is_named_by_its_option"],
    ),
    (
        "dstep-real-pixel-label",
        "scatloss/criterion.py",
        '_select(real_out, self.pixel_output, "pixel_output", tensor_ok=single)',
        '_select(real_out, self.pixel_output, "PIXEL_OUTPUT", tensor_ok=single)',
        [CR + "::test_a_missing_head_is_named_by_its_option"],
    ),
    (
        "dstep-single-None",
        "scatloss/criterion.py",
        "single = self.global_output is None",
        "single = None",
        [CR + "::test_single_tensor_output_is_the_pixel_map_without_a_global_head"],
    ),
    (
        "sampler-recheck-None",
        "scatloss/criterion.py",
        "recheck=self.mask_sampler is not None)",
        "recheck=None)",
        [CR + "::test_mask_sampler_values_are_checked_inside_the_step"],
    ),
    (
        "sampler-recheck-inverted",
        "scatloss/criterion.py",
        "recheck=self.mask_sampler is not None)",
        "recheck=self.mask_sampler is None)",
        [CR + "::test_mask_sampler_values_are_checked_inside_the_step"],
    ),
    (
        "sampler-name-XX",
        "scatloss/criterion.py",
        'name="mask_sampler(...)", recheck',
        'name="XXmask_sampler(...)XX", recheck',
        [CR + "::test_mask_sampler_returning_the_wrong_number_of_masks_raises"],
    ),
    (
        "dstep-check-as-generator",
        "scatloss/criterion.py",
        "self._check_inputs(prediction, image, hole, generator=False)",
        "self._check_inputs(prediction, image, hole, generator=True)",
        [CR + "::test_discriminator_step_accepts_a_ground_truth_that_requires_grad"],
    ),
    (
        "global-offset-sign",
        "scatloss/criterion.py",
        "diagonal = (flat // m) + offset == (flat % m)",
        "diagonal = (flat // m) - offset == (flat % m)",
        [CR + "::test_global_negatives_use_every_ranks_masks_with_this_ranks_own_at_its_offset"],
    ),
    (
        "chunk-on-channels",
        "scatloss/criterion.py",
        "if x.shape[0] <= self.chunk_size:",
        "if x.shape[1] <= self.chunk_size:",
        [CR + "::test_autograd_free_passes_never_exceed_chunk_size"],
    ),
    (
        "dev-sample-masks",
        "scatloss/criterion.py",
        "return masks.to(device)",
        "return masks.to(None)",
        [CR + "::test_steps_keep_every_tensor_on_the_inputs_device"],
    ),
    (
        "dev-negative-masks",
        "scatloss/criterion.py",
        "hole.shape[-1], hole.device), m, False, 0",
        "hole.shape[-1], None), m, False, 0",
        [CR + "::test_steps_keep_every_tensor_on_the_inputs_device"],
    ),
    (
        "dev-todo",
        "scatloss/criterion.py",
        "todo = (flat[~diagonal] if shared else flat).to(image.device)",
        "todo = (flat[~diagonal] if shared else flat).to(None)",
        [CR + "::test_steps_keep_every_tensor_on_the_inputs_device"],
    ),
    (
        "dev-diagonal",
        "scatloss/criterion.py",
        "out[flat[diagonal].to(image.device)] = own",
        "out[flat[diagonal].to(None)] = own",
        [CR + "::test_steps_keep_every_tensor_on_the_inputs_device"],
    ),
    (
        "dev-naive-arange",
        "scatloss/criterion.py",
        "idx = torch.arange(b * m, device=image.device)",
        "idx = torch.arange(b * m, device=None)",
        [CR + "::test_steps_keep_every_tensor_on_the_inputs_device"],
    ),
    (
        "net-seg-label",
        "scatloss/criterion.py",
        '("segmenter", self.segmenter)):',
        '("XXsegmenterXX", self.segmenter)):',
        [CR + "::test_image_dtype_is_checked_against_the_segmenter_too"],
    ),
    (
        "net-disc-label",
        "scatloss/criterion.py",
        '(("discriminator", self.discriminator),',
        '(("DISCRIMINATOR", self.discriminator),',
        [CR + "::test_image_dtype_is_checked_against_the_segmenter_too"],
    ),
    (
        "net-param-none-break",
        "scatloss/criterion.py",
        "            if param is None:\n                continue",
        "            if param is None:\n                break",
        [CR + "::test_image_dtype_is_checked_against_the_segmenter_too"],
    ),
    (
        "net-param-None",
        "scatloss/criterion.py",
        "param = next((p for p in net.parameters() if p.is_floating_point()), None)",
        "param = None",
        [CR + "::test_image_dtype_is_checked_against_the_segmenter_too"],
    ),
    (
        "gstep-generator-False",
        "scatloss/criterion.py",
        "self._check_inputs(prediction, image, hole, generator=True)",
        "self._check_inputs(prediction, image, hole, generator=False)",
        [CR + "::test_swapped_prediction_and_image_are_refused_in_the_generator_step"],
    ),
    (
        "img-ndim-None",
        "scatloss/criterion.py",
        'check_float_tensor("image", image, ndim=4)',
        'check_float_tensor("image", image, ndim=None)',
        [CR + "::test_a_bad_image_is_named_as_the_image"],
    ),
    (
        "img-nonempty-None",
        "scatloss/criterion.py",
        'check_nonempty_batch("image", image)',
        "check_nonempty_batch(None, image)",
        [CR + "::test_a_bad_image_is_named_as_the_image"],
    ),
    (
        "swap-both-grad",
        "scatloss/criterion.py",
        "and image.requires_grad and not prediction.requires_grad:",
        "and image.requires_grad and prediction.requires_grad:",
        [CR + "::test_swapped_prediction_and_image_are_refused_in_the_generator_step"],
    ),
    (
        "switch-None",
        "scatloss/criterion.py",
        'switch = "check_inputs=False"',
        "switch = None",
        [CR + "::test_boundary_heuristics_name_the_argument_the_convention_and_the_switch"],
    ),
    (
        "range-inverted",
        "scatloss/criterion.py",
        "if self.image_range is not None:",
        "if self.image_range is None:",
        [CR + "::test_boundary_heuristics_name_the_argument_the_convention_and_the_switch"],
    ),
    (
        "range-host",
        "scatloss/criterion.py",
        'host="SCATCriterion", checks=checks, switch=switch',
        'host="scatcriterion", checks=checks, switch=switch',
        [CR + "::test_boundary_heuristics_name_the_argument_the_convention_and_the_switch"],
    ),
    (
        "range-name",
        "scatloss/criterion.py",
        '"image", image, expected=self.image_range',
        '"XXimageXX", image, expected=self.image_range',
        [CR + "::test_boundary_heuristics_name_the_argument_the_convention_and_the_switch"],
    ),
    (
        "range-switch-dropped",
        "scatloss/criterion.py",
        'host="SCATCriterion", checks=checks, switch=switch',
        'host="SCATCriterion", checks=checks',
        [CR + "::test_boundary_heuristics_name_the_argument_the_convention_and_the_switch"],
    ),
    (
        "conv-name",
        "scatloss/criterion.py",
        'check_hole_convention("hole", prediction',
        'check_hole_convention("HOLE", prediction',
        [CR + "::test_boundary_heuristics_name_the_argument_the_convention_and_the_switch"],
    ),
    (
        "conv-host",
        "scatloss/criterion.py",
        'hole, host="scatloss", checks=checks, switch=switch)',
        'hole, host="SCATLOSS", checks=checks, switch=switch)',
        [CR + "::test_boundary_heuristics_name_the_argument_the_convention_and_the_switch"],
    ),
    (
        "conv-switch",
        "scatloss/criterion.py",
        'hole, host="scatloss", checks=checks, switch=switch)',
        'hole, host="scatloss", checks=checks, switch=None)',
        [CR + "::test_boundary_heuristics_name_the_argument_the_convention_and_the_switch"],
    ),
    (
        "ratio-name",
        "scatloss/criterion.py",
        'check_hole_ratio("hole", hole,',
        "check_hole_ratio(None, hole,",
        [CR + "::test_boundary_heuristics_name_the_argument_the_convention_and_the_switch"],
    ),
    (
        "ratio-switch",
        "scatloss/criterion.py",
        "limit=MAX_MEAN_HOLE_RATIO, checks=checks, switch=switch)",
        "limit=MAX_MEAN_HOLE_RATIO, checks=checks, switch=None)",
        [CR + "::test_boundary_heuristics_name_the_argument_the_convention_and_the_switch"],
    ),
    (
        "early-exit-off",
        "scatloss/criterion.py",
        "self._tap_early = FeatureTap(discriminator, layers, early_exit=True, preserve_buffers=True)",
        "self._tap_early = FeatureTap(discriminator, layers, early_exit=False, preserve_buffers=True)",
        [CR + "::test_feature_passes_stop_after_the_deepest_requested_layer"],
    ),
]
# documented equivalent (benchmarks/mutation/equivalent.txt): expected to survive
EQUIVALENT = {"dev-todo", "dev-diagonal", "dev-naive-arange", "early-exit-off"}
only = sys.argv[2:]
results = []
for name, path, old, new, tests in MUTANTS:
    if old is None or (only and name not in only):
        continue
    f = ROOT / path
    src = f.read_text()
    if old not in src:  # the code moved on: say so instead of guessing
        print(f"{name:40s} NOT APPLICABLE (line not found in {path})", flush=True)
        continue
    # baseline: the selected tests pass on the unmutated copy
    f.write_text(src.replace(old, new, 1))
    try:
        r = subprocess.run(
            [PY, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "no:randomly", *tests],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
    finally:
        f.write_text(src)
    last = [s for s in r.stdout.splitlines() if s.strip()][-1] if r.stdout.strip() else r.stderr[-300:]
    caught = r.returncode == 1
    results.append((name, caught, last))
    verdict = "CAUGHT" if caught else ("SURVIVED (documented equivalent)" if name in EQUIVALENT else "SURVIVED")
    print(f"{name:40s} {verdict} rc={r.returncode} | {last}", flush=True)

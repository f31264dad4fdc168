#!/usr/bin/env python3
"""PyTorch reference timings for `glue bench models` (src/model_bench.rs).

Times the reference implementations (transformers' CLIPVisionModel, LeRobot 0.4.4's
DiffusionConditionalUnet1d, torch.nn.MultiheadAttention) of the workloads the Rust side times, and prints
ONE JSON object on stdout:

    {"torch": "<version>", "threads": N,
     "cases": {"<name>": {"median_s": x, "min_s": y, "max_s": z, "runs": n}, ...}}

plus a human-readable table on stderr. Every model is float32 on CPU with random initialisation built from
its config (nothing is ever downloaded); inputs are random with a fixed seed. Each case runs 2 warm-up runs,
then `--repeats` timed runs (time.perf_counter). Forward-only cases run under torch.inference_mode().

Cases (the Rust side must use identical shapes, or the ratios it prints are meaningless):

  vit_b16_forward        CLIPVisionModel ViT-B/16 (hidden 768, mlp 3072, 12 layers, 12 heads, 224 px,
                         patch 16, quick_gelu), pixel_values [1,3,224,224], forward.
  small_vit_train_step   CLIPVisionModel (hidden 192, mlp 768, 4 layers, 3 heads, 96 px, patch 8 = 144
                         patch tokens, gelu), input [32,3,96,96]; loss = last_hidden_state.pow(2).mean();
                         backward; AdamW(lr=1e-4).step(); zero_grad. One step per run.
  unet_lerobot_forward   LeRobot DiffusionConditionalUnet1d at DiffusionConfig defaults (down_dims
                         (512,1024,2048), kernel 5, 8 groups, step embed 128, FiLM scale modulation),
                         action dim 8, horizon 16, global_cond_dim 2062 (= 2 obs steps x 1031);
                         x [1,16,8], timestep [1] (int64), global_cond [1,2062]; forward.
  unet_small_train_step  The same U-Net class with down_dims (64,128,256), step embed 64, global_cond_dim
                         398 (= 2 x (128+64+7)); x [32,16,8], timestep [32] (int64), global_cond [32,398];
                         MSE against a random noise target; backward; AdamW(lr=1e-4) step.
  glue_small_inference   GLUE `small`, batch 1, 2 observation steps, one run =
                         (a) global ViT (hidden 128, mlp 512, 4 layers, 4 heads, 112 px, patch 14, gelu)
                             on [2,3,112,112] (both observation steps);
                         (b) local ViT (hidden 96, mlp 384, 4 layers, 4 heads, 56 px, patch 4, gelu) on the
                             2x2 sub-images of ONE frame [4,3,56,56] (the previous frame's are cached);
                         (c) fusion: MultiheadAttention(128, 4 heads, kdim=vdim=96) with queries = the 64
                             global patch tokens [2,64,128], keys/values = 24 keypoint features [2,24,96];
                             Linear(128,64); mean over tokens; concat [CLS 128 | 64 | state 7] per step
                             -> global_cond [1, 2*199 = 398];
                         (d) 10 DDIM steps = 10 calls of the case-4 U-Net on x [1,16,8].
  glue_full_inference    GLUE `full`, same pipeline: global ViT-B/16 on [2,3,224,224]; local ViT-B/16 on
                         [4,3,224,224]; MHA(768, 8 heads, kdim=vdim=768), queries [2,196,768], keys
                         [2,24,768]; Linear(768,256); global_cond [1, 2*1031 = 2062]; 10 U-Net calls.
                         The U-Net is the one `PolicyConfig::new(Glue, Full)` builds on the Rust side:
                         down_dims (256,512,1024), step embed 128 (NOT LeRobot's default 512/1024/2048 of
                         case 3; see FULL_GLUE_DOWN_DIMS). Runs min(repeats, 3) timed runs (slow on 2 cores).

  owlvit_b32_detect      OwlViTForObjectDetection at OwlViTConfig() (google/owlvit-base-patch32's shape: CLIP
                         ViT-B/32 at 768 px, text tower 12x512), pixel_values [1,3,768,768], 2 queries of 16
                         tokens; forward (boxes and logits). Once per episode in the graph.
  sam_vit_b_segment      SamModel at SamConfig() (facebook/sam-vit-base's shape: ViT-B at 1024 px, windows 14,
                         global layers 2/5/8/11), pixel_values [1,3,1024,1024], 2 box prompts, single mask;
                         forward. Once per episode in the graph. Runs min(repeats, 3) timed runs.

Not mirrored here: the Rust-only `glue_small_train_step` (it includes GLUE's image pipeline).

Threads: run the Rust side with RAYON_NUM_THREADS equal to --threads.

Usage: python benches/torch_reference.py [--threads 2] [--repeats 5] [--cases a,b,...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch
from torch import nn

CASES = [
    "vit_b16_forward",
    "small_vit_train_step",
    "unet_lerobot_forward",
    "unet_small_train_step",
    "glue_small_inference",
    "glue_full_inference",
    "owlvit_b32_detect",
    "sam_vit_b_segment",
]

WARMUP = 2
SEED = 0
ACTION_DIM = 8
HORIZON = 16
N_OBS_STEPS = 2
STATE_DIM = 7
N_KEYPOINTS = 24
DDIM_STEPS = 10
# The Rust `full` GLUE policy's U-Net (src/policy/config.rs); case 3 keeps LeRobot's default (512, 1024, 2048).
FULL_GLUE_DOWN_DIMS = (256, 512, 1024)


# ----------------------------------------------------------------------------------------------- models


def clip_vit(hidden, intermediate, layers, heads, image, patch, act):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        image_size=image,
        patch_size=patch,
        hidden_act=act,
        # Attention backend: PyTorch SDPA (torch.nn.functional.scaled_dot_product_attention), transformers'
        # default on torch >= 2.1; set explicitly so the reference never silently falls back to "eager".
        attn_implementation="sdpa",
    )
    model = CLIPVisionModel(config).float().eval()
    assert model.config._attn_implementation == "sdpa", model.config._attn_implementation
    return model


def vit_b16():
    return clip_vit(768, 3072, 12, 12, 224, 16, "quick_gelu")


def lerobot_unet(down_dims, step_embed, global_cond_dim):
    """LeRobot 0.4.4's DiffusionConditionalUnet1d, built the way DiffusionModel.__init__ builds it.

    The constructor is `DiffusionConditionalUnet1d(config, global_cond_dim)` (DiffusionModel passes
    per-step cond width x n_obs_steps); it reads config.action_feature.shape[0] (the `action` output
    feature), down_dims, kernel_size, n_groups, diffusion_step_embed_dim and use_film_scale_modulation.
    DiffusionConfig.__post_init__ requires horizon % 2**len(down_dims) == 0 (16 % 8 here).
    """
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionConditionalUnet1d

    config = DiffusionConfig(
        device="cpu",
        horizon=HORIZON,
        n_obs_steps=N_OBS_STEPS,
        down_dims=tuple(down_dims),
        diffusion_step_embed_dim=step_embed,
        # kernel_size 5, n_groups 8, use_film_scale_modulation True: DiffusionConfig defaults.
        input_features={"observation.state": PolicyFeature(type=FeatureType.STATE, shape=(STATE_DIM,))},
        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(ACTION_DIM,))},
    )
    assert config.action_feature is not None and config.action_feature.shape == (ACTION_DIM,)
    return DiffusionConditionalUnet1d(config, global_cond_dim=global_cond_dim).float().eval()


def timesteps(batch, t=10):
    # LeRobot's conditional_sample passes `torch.full((B,), t, dtype=torch.long)`; the sinusoidal embedding
    # multiplies it by float frequencies, so int64 vs float timesteps give the same embedding.
    return torch.full((batch,), t, dtype=torch.long)


# ------------------------------------------------------------------------------------------------ cases


def case_vit_b16_forward():
    model = vit_b16()
    x = torch.randn(1, 3, 224, 224)

    def run():
        with torch.inference_mode():
            model(pixel_values=x).last_hidden_state

    return run


def train_step(model, loss_fn):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()

    def run():
        loss = loss_fn()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return run


def case_small_vit_train_step():
    model = clip_vit(192, 768, 4, 3, 96, 8, "gelu")
    x = torch.randn(32, 3, 96, 96)
    return train_step(model, lambda: model(pixel_values=x).last_hidden_state.pow(2).mean())


def case_unet_lerobot_forward():
    unet = lerobot_unet((512, 1024, 2048), 128, 2 * 1031)
    x, t, c = torch.randn(1, HORIZON, ACTION_DIM), timesteps(1), torch.randn(1, 2 * 1031)

    def run():
        with torch.inference_mode():
            unet(x, t, global_cond=c)

    return run


def case_unet_small_train_step():
    unet = lerobot_unet((64, 128, 256), 64, 2 * (128 + 64 + STATE_DIM))
    x, t, c = torch.randn(32, HORIZON, ACTION_DIM), timesteps(32), torch.randn(32, 398)
    target = torch.randn(32, HORIZON, ACTION_DIM)
    return train_step(unet, lambda: nn.functional.mse_loss(unet(x, t, global_cond=c), target))


def glue_inference(global_vit, global_px, local_vit, local_px, mha, proj, unet):
    """One GLUE inference at batch 1 with N_OBS_STEPS observation steps (see the module docstring)."""
    d_global = mha.embed_dim
    d_local = mha.kdim
    images = torch.randn(N_OBS_STEPS, 3, global_px, global_px)
    sub_images = torch.randn(4, 3, local_px, local_px)  # 2x2 quadrants of the current frame only
    cached_keys = torch.randn(1, N_KEYPOINTS, d_local)  # previous frame's key features
    state = torch.randn(1, N_OBS_STEPS * STATE_DIM)
    noise = torch.randn(1, HORIZON, ACTION_DIM)
    ts = [timesteps(1, t) for t in range(90, -1, -10)][:DDIM_STEPS]

    def run():
        with torch.inference_mode():
            # (a) global ViT on both observation steps.
            h = global_vit(pixel_values=images).last_hidden_state  # [2, 1+P, d_global]
            cls, patches = h[:, 0], h[:, 1:]
            assert patches.shape[-1] == d_global
            # (b) local ViT on the current frame's 4 sub-images; keypoint features gathered from its grid.
            grid = local_vit(pixel_values=sub_images).last_hidden_state[:, 1:]  # [4, p, d_local]
            current_keys = grid.reshape(1, -1, d_local)[:, :N_KEYPOINTS]
            keys = torch.cat([cached_keys, current_keys], dim=0)  # [2, 24, d_local]
            # (c) fusion: cross-attention of global patches to key features, projection, token mean.
            fused, _ = mha(patches, keys, keys, need_weights=False)
            fused = proj(fused).mean(dim=1)  # [2, out]
            cond = torch.cat([cls, fused, state.view(N_OBS_STEPS, STATE_DIM)], dim=-1).reshape(1, -1)
            # (d) DDIM sampling: one U-Net call per step (scheduler arithmetic is negligible).
            x = noise
            for t in ts:
                x = unet(x, t, global_cond=cond)
            return x

    return run


def case_glue_small_inference():
    global_vit = clip_vit(128, 512, 4, 4, 112, 14, "gelu")
    local_vit = clip_vit(96, 384, 4, 4, 56, 4, "gelu")
    mha = nn.MultiheadAttention(embed_dim=128, num_heads=4, kdim=96, vdim=96, batch_first=True).eval()
    proj = nn.Linear(128, 64).eval()
    unet = lerobot_unet((64, 128, 256), 64, 2 * (128 + 64 + STATE_DIM))
    return glue_inference(global_vit, 112, local_vit, 56, mha, proj, unet)


def case_glue_full_inference():
    global_vit, local_vit = vit_b16(), vit_b16()
    mha = nn.MultiheadAttention(embed_dim=768, num_heads=8, kdim=768, vdim=768, batch_first=True).eval()
    proj = nn.Linear(768, 256).eval()
    unet = lerobot_unet(FULL_GLUE_DOWN_DIMS, 128, 2 * (768 + 256 + STATE_DIM))
    return glue_inference(global_vit, 224, local_vit, 224, mha, proj, unet)


def case_owlvit_b32_detect():
    from transformers import OwlViTConfig, OwlViTForObjectDetection

    model = OwlViTForObjectDetection(OwlViTConfig()).float().eval()
    pixels = torch.randn(1, 3, 768, 768)
    input_ids = torch.randint(1, 49406, (2, 16))
    input_ids[:, 0], input_ids[:, -1] = 49406, 49407
    mask = torch.ones(2, 16, dtype=torch.int64)

    def run():
        with torch.inference_mode():
            model(input_ids=input_ids, pixel_values=pixels, attention_mask=mask)

    return run


def case_sam_vit_b_segment():
    from transformers import SamConfig, SamModel

    model = SamModel(SamConfig()).float().eval()
    pixels = torch.randn(1, 3, 1024, 1024)
    boxes = torch.tensor([[[100.0, 120.0, 400.0, 380.0], [500.0, 300.0, 900.0, 700.0]]])

    def run():
        with torch.inference_mode():
            model(pixel_values=pixels, input_boxes=boxes, multimask_output=False)

    return run


BUILDERS = {name: globals()[f"case_{name}"] for name in CASES}


# ---------------------------------------------------------------------------------------------- harness


def time_case(run, repeats):
    for _ in range(WARMUP):
        run()
    xs = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        xs.append(time.perf_counter() - start)
    return {"median_s": statistics.median(xs), "min_s": min(xs), "max_s": max(xs), "runs": len(xs)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of: " + ",".join(CASES))
    args = parser.parse_args()
    wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in wanted if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; expected some of {CASES}")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)

    results = {}
    for name in (c for c in CASES if c in wanted):
        print(f"timing {name} ...", file=sys.stderr, flush=True)
        torch.manual_seed(SEED)
        run = BUILDERS[name]()
        slow = name in ("glue_full_inference", "sam_vit_b_segment")
        repeats = min(args.repeats, 3) if slow else args.repeats
        results[name] = time_case(run, repeats)
        del run

    print(f"\ntorch {torch.__version__}, {args.threads} threads", file=sys.stderr)
    print(f"{'case':<24}{'median s':>11}{'min s':>11}{'max s':>11}{'runs':>6}", file=sys.stderr)
    for name, r in results.items():
        print(
            f"{name:<24}{r['median_s']:>11.4f}{r['min_s']:>11.4f}{r['max_s']:>11.4f}{r['runs']:>6}",
            file=sys.stderr,
        )
    print(json.dumps({"torch": torch.__version__, "threads": args.threads, "cases": results}))


if __name__ == "__main__":
    main()

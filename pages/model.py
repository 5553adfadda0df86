"""Model: pick a shipped checkpoint or upload one, see what it is and its GT samples."""
import numpy as np
import streamlit as st
import torch

from explorer import cached, compute, evaluation, figures, state, ui
from explorer.models import (MAX_UPLOAD_MB, UPLOAD_LIMIT_LABEL, ModelLoadError, describe, folder_key, is_2d, is_image,
                             load_folder, upload_key)

ui.header(
    "Model",
    "A flow or diffusion model is a **velocity field** $u_t(x)$. Sampling solves the ODE "
    "$\\frac{dx}{dt} = u_t(x)$ from noise $x_0 \\sim \\mathcal N(0, I)$ at $t = 0$ to data at $t = 1$. "
    "The model was trained on a Gaussian path that mixes data $x_1$ and noise $x_0$:",
    r"x_t = \alpha_t\, x_1 + \sigma_t\, x_0,\qquad \alpha_0 = 0,\ \sigma_0 = 1,\ \alpha_1 = 1,\ \sigma_1 = 0",
    "pick a model here; every other page works on it. The GT samples below come from an adaptive "
    "solver (dopri5, hundreds of evaluations): the target every cheap solver is measured against.",
)

def _classifier_accuracy() -> float:
    from core.features_mnist import load_classifier
    return float(load_classifier().info.get("test_accuracy", float("nan")))


# --- Pick or upload -------------------------------------------------------------------------
rows = state.entries()
keys = [r.key for r in rows]
labels = {r.key: r.label for r in rows}
current = state.model_key()
col_pick, col_up = st.columns([3, 2])
with col_pick:
    if st.session_state.get("model.pick_next") in keys:  # set by an upload below, on the previous run
        st.session_state[f"model.pick.{len(keys)}"] = st.session_state.pop("model.pick_next")
    choice = st.selectbox("Model", keys, index=keys.index(current) if current in keys else 0,
                          format_func=lambda k: labels[k], key=f"model.pick.{len(keys)}")
    if choice != current:
        state.set_model(choice)
        st.rerun()
with col_up:
    up = st.file_uploader(f"...or upload a model checkpoint (.safetensors, {UPLOAD_LIMIT_LABEL})",
                          max_upload_size=MAX_UPLOAD_MB, key="model.upload")
    if up is not None:
        raw = up.getvalue()
        key = upload_key(raw)
        if key in st.session_state[state.UPLOADS] and st.session_state.get("model.upload_seen") != up.file_id:
            # The same file uploaded again (a new upload of it): make it the current model again.
            st.session_state["model.upload_seen"] = up.file_id
            if key != state.model_key():
                state.set_model(key)
                st.session_state["model.pick_next"] = key
                st.rerun()
        elif key not in st.session_state[state.UPLOADS]:
            st.session_state["model.upload_seen"] = up.file_id
            try:
                state.add_upload(up.name, raw)
            except ModelLoadError as e:
                ui.show_error(f"Could not open {up.name!r}: {e}")
            else:
                state.set_model(key)
                st.success(f"Loaded {up.name}; it is now the current model.")
                st.rerun()
    with st.form("model.folder_form", border=False):
        folder = st.text_input("...or a local diffusers pipeline folder (a path on the machine running the app)",
                               key="model.folder", placeholder="/path/to/pipeline (model_index.json, unet/, scheduler/)")
        if st.form_submit_button("Open folder") and folder.strip():
            fkey = folder_key(folder.strip())
            try:
                load_folder(fkey.partition(":")[2])
            except ModelLoadError as e:
                ui.show_error(f"Could not open {folder.strip()!r}: {e}")
            else:
                st.session_state[state.UPLOADS][fkey] = (f"diffusers folder {fkey.rsplit('/', 1)[-1]}", None)
                state.set_model(fkey)
                st.rerun()

# --- What it is ----------------------------------------------------------------------------
base = state.base_field()
if getattr(base, "num_classes", 0):
    default_w = base.guidance_scale if base.guidance_scale is not None else 1.0
    w = st.slider("Classifier-free guidance scale w (u = u_uncond + w (u_cond - u_uncond); one guided "
                  "evaluation counts as one NFE)", 0.0, 4.0, float(state.guidance() or default_w), 0.25,
                  key=f"model.w.{state.model_key()}")
    if w != (state.guidance() or default_w):
        state.set_guidance(w)
        st.rerun()
field = state.current_field()
info = describe(field, state.current_label())
col_info, col_path = st.columns([2, 3])
with col_info:
    st.subheader("What it is")
    st.table({"": list(info.keys()), "value": list(info.values())})
with col_path:
    if field.path is not None:
        t = torch.linspace(0, 1, 201, dtype=torch.float64)
        c = field.path(t)
        st.plotly_chart(figures.path_coefficients(t.numpy(), c.alpha.numpy(), c.sigma.numpy(), field.path.name),
                        key="model.path")
        if field.path.name == "eps-vp":
            st.caption(f"eps-VP: alpha_0 = {float(c.alpha[0]):.4f}, not exactly 0: the source is almost, "
                       "not exactly, pure noise.")

# --- Its GT samples next to the data -----------------------------------------------------------
# Drawn last: the GT solve takes a second or two, and everything above is on screen meanwhile.
st.subheader("Ground-truth samples next to the data")
n, seed = evaluation.size(field), evaluation.EVAL_SEED
gt = cached.gt_samples(state.field_key(), n, seed, field)
versus = cached.data_comparison(state.field_key(), n, seed, field)
panels = {"GT (dopri5)": gt.x}
subtitles = {"GT (dopri5)": f"{n} samples · adaptive, {gt.nfe} NFE"}
if versus is not None:
    panels["data (training distribution)"] = versus["data"]
    subtitles["data (training distribution)"] = f"{n} fresh samples of the data set"
if is_image(field):
    labels_note = " (GT row-major, classes cycling 0, 1, 2, ...)" if getattr(field, "num_classes", 0) else ""
    large = evaluation.kind(field) == "large image"  # 28x28: one grid a row, at a readable size
    st.plotly_chart(figures.image_grids(panels, f"What the model makes and what it learned from{labels_note}",
                                        subtitles, cols=10, per_row=1 if large else None), key="model.gt")
elif is_2d(field):
    st.plotly_chart(figures.scatter_2d(panels, "What the model makes and what it learned from", subtitles),
                    key="model.gt")
else:
    st.write(f"{n} GT samples of shape {field.data_shape}; mean {np.mean(gt.x):.3f}, std {np.std(gt.x):.3f}.")
if versus is not None:
    st.dataframe(versus["rows"], hide_index=True, key="model.distance")
    st.caption("Distance between the GT samples and fresh data (lower is better). Two independent data samples of "
               "this size are not at distance 0 either (last column): that is the level a perfect model shows with "
               "this many samples. A well-trained model is at about that level; an under-trained one well above it.")
else:
    st.caption("This model's checkpoint does not name a data set this app can sample, so its GT samples cannot be "
               "compared with its data.")
legible = compute.image_scores(field, [compute.Run(compute.GT_LABEL, gt.nfe, gt.x)])
if legible and "legibility" in legible[0]:
    st.caption(f"Legibility of the GT samples: the shipped MNIST classifier reads {legible[0]['legibility']:.0%} of "
               f"them as the digit they were asked for (its own accuracy on held-out real images: "
               f"{_classifier_accuracy():.1%}).")
st.caption(f"GT samples: {evaluation.describe(field)}, so samples, paths and errors line up across pages.")

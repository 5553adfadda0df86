"""Model: pick a shipped checkpoint or upload one, see what it is and its GT samples."""
import numpy as np
import streamlit as st
import torch

from explorer import cached, figures, state, ui
from explorer.models import MAX_UPLOAD_MB, UPLOAD_LIMIT_LABEL, ModelLoadError, describe, is_2d, is_image, upload_key

ui.header(
    "Model",
    "A flow or diffusion model is a **velocity field** $u_t(x)$. Sampling solves the ODE "
    "$\\frac{dx}{dt} = u_t(x)$ from noise $x_0 \\sim \\mathcal N(0, I)$ at $t = 0$ to data at $t = 1$. "
    "The model was trained on a Gaussian path that mixes data $x_1$ and noise $x_0$:",
    r"x_t = \alpha_t\, x_1 + \sigma_t\, x_0,\qquad \alpha_0 = 0,\ \sigma_0 = 1,\ \alpha_1 = 1,\ \sigma_1 = 0",
    "pick a model here; every other page works on it. The GT samples below come from an adaptive "
    "solver (dopri5, hundreds of evaluations): the target every cheap solver is measured against.",
)

# --- Pick or upload -------------------------------------------------------------------------
rows = state.entries()
keys = [r.key for r in rows]
labels = {r.key: r.label for r in rows}
current = state.model_key()
col_pick, col_up = st.columns([3, 2])
with col_pick:
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
        if key not in st.session_state[state.UPLOADS]:
            try:
                state.add_upload(up.name, raw)
            except ModelLoadError as e:
                ui.show_error(f"Could not open {up.name!r}: {e}")
            else:
                state.set_model(key)
                st.success(f"Loaded {up.name}; it is now the current model.")
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

# --- Its GT samples ---------------------------------------------------------------------------
st.subheader("Ground-truth samples")
if is_image(field):
    n = 20
    x = cached.gt_samples(state.field_key(), n, 0, field)
    labels_note = " (row-major, classes cycling 0, 1, 2, ...)" if getattr(field, "num_classes", 0) else ""
    st.plotly_chart(figures.image_grids({"GT (dopri5)": x}, f"{n} GT samples{labels_note}", cols=10),
                    key="model.gt")
elif is_2d(field):
    n = 2000
    x = cached.gt_samples(state.field_key(), n, 0, field)
    st.plotly_chart(figures.scatter_2d({"GT (dopri5)": x}, f"{n} GT samples"), key="model.gt")
else:
    n = 256
    x = cached.gt_samples(state.field_key(), n, 0, field)
    st.write(f"{n} GT samples of shape {field.data_shape}; mean {np.mean(x):.3f}, std {np.std(x):.3f}.")
st.caption("Same noise (seed 0) on every page, so samples, paths and errors line up across pages.")

"""to_torch op table: the recurrent layers LSTM and GRU."""
from __future__ import annotations

from spa.runtime.torch_ops_common import as_text, optional, unsupported


def ops(torch, F) -> dict:
    """Op type → (module, node, attrs, args, values) → tensor or tuple."""

    return {
        "LSTM": lambda m, n, a, x, v: _recurrent(torch, F, m, n, a, x, "LSTM"),
        "GRU": lambda m, n, a, x, v: _recurrent(torch, F, m, n, a, x, "GRU"),
    }


def _rnn_activation(torch, F, n, name: str, alphas: list, betas: list):
    """The activation called `name`, taking its alpha/beta from the front of the given lists."""
    def take(values, default):
        return values.pop(0) if values else default

    name = as_text(name, "")
    plain = {"Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Relu": torch.relu, "Softsign": F.softsign,
             "Softplus": F.softplus}
    if name in plain:
        return plain[name]
    if name == "LeakyRelu":
        alpha = take(alphas, 0.01)
        return lambda t: F.leaky_relu(t, alpha)
    if name == "ThresholdedRelu":
        alpha = take(alphas, 1.0)
        return lambda t: torch.where(t > alpha, t, torch.zeros_like(t))
    if name == "Elu":
        alpha = take(alphas, 1.0)
        return lambda t: F.elu(t, alpha)
    if name == "HardSigmoid":
        alpha, beta = take(alphas, 0.2), take(betas, 0.5)
        return lambda t: torch.clamp(alpha * t + beta, 0, 1)
    if name == "Affine":
        alpha, beta = take(alphas, 1.0), take(betas, 0.0)
        return lambda t: alpha * t + beta
    if name == "ScaledTanh":
        alpha, beta = take(alphas, 1.0), take(betas, 1.0)
        return lambda t: alpha * torch.tanh(beta * t)
    unsupported(n, f"activations={name}")


def _recurrent(torch, F, m, n, a, x, kind: str):
    """LSTM (gates i, o, f, c; peepholes i, o, f) and GRU (gates z, r, h), every direction and layout,
    sequence_lens (states stop at each sequence's end, Y is 0 beyond it), clip and input_forget."""
    gates = 4 if kind == "LSTM" else 3
    X, W, R = x[0], x[1], x[2]
    B, lens, h0 = optional(x, 3), optional(x, 4), optional(x, 5)
    c0, P = (optional(x, 6), optional(x, 7)) if kind == "LSTM" else (None, None)
    layout = a.get("layout", 0)
    if layout:
        X = X.transpose(0, 1)
        h0 = h0.transpose(0, 1) if h0 is not None else None
        c0 = c0.transpose(0, 1) if c0 is not None else None
    direction = as_text(a.get("direction"), "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        unsupported(n, f"direction={direction}")
    dirs = 2 if direction == "bidirectional" else 1
    hidden = int(a.get("hidden_size", R.shape[-1]))
    steps, batch = X.shape[0], X.shape[1]
    per = 3 if kind == "LSTM" else 2
    names = [as_text(s, "") for s in a.get("activations", [])] or \
        (["Sigmoid", "Tanh", "Tanh"] if kind == "LSTM" else ["Sigmoid", "Tanh"]) * dirs
    if len(names) != per * dirs:
        unsupported(n, f"{len(names)} activations for {dirs} direction(s)")
    alphas, betas = list(a.get("activation_alpha", [])), list(a.get("activation_beta", []))
    acts = [_rnn_activation(torch, F, n, s, alphas, betas) for s in names]
    clip = a.get("clip")
    bound = (lambda t: torch.clamp(t, -clip, clip)) if clip is not None else (lambda t: t)
    input_forget = bool(a.get("input_forget", 0))
    before_reset = bool(a.get("linear_before_reset", 0))
    valid = None
    if lens is not None:
        lens = lens.long().reshape(-1)
        if bool((lens < steps).any()):
            valid = [(t < lens).unsqueeze(1) for t in range(steps)]
    H = hidden
    ys, hs, cs = [], [], []
    for d in range(dirs):
        f, g = acts[per * d], acts[per * d + 1]
        h_act = acts[per * d + 2] if kind == "LSTM" else None
        w, r = W[d], R[d]
        xw = X @ w.transpose(0, 1)
        if B is not None:
            xw = xw + B[d, :gates * H]
            rb = B[d, gates * H:]
        else:
            rb = None
        h = h0[d] if h0 is not None else X.new_zeros(batch, H)
        c = c0[d] if c0 is not None else X.new_zeros(batch, H)
        p = P[d] if P is not None else None
        out = [None] * steps
        order = range(steps - 1, -1, -1) if (direction == "reverse" or d == 1) else range(steps)
        for t in order:
            if kind == "LSTM":
                gate = xw[t] + h @ r.transpose(0, 1)
                if rb is not None:
                    gate = gate + rb
                gi, go, gf, gc = gate.split(H, -1)
                if p is not None:
                    gi, gf = gi + p[:H] * c, gf + p[2 * H:] * c
                i = f(bound(gi))
                forget = 1 - i if input_forget else f(bound(gf))
                c_new = forget * c + i * g(bound(gc))
                if p is not None:
                    go = go + p[H:2 * H] * c_new
                h_new = f(bound(go)) * h_act(c_new)
            else:
                gz, gr, gh = xw[t].split(H, -1)
                rz, rr, rh = r.split(H, 0)
                bz, br, bh = rb.split(H, -1) if rb is not None else (0, 0, 0)
                z = f(bound(gz + h @ rz.transpose(0, 1) + bz))
                reset = f(bound(gr + h @ rr.transpose(0, 1) + br))
                if before_reset:
                    cand = g(bound(gh + reset * (h @ rh.transpose(0, 1) + bh)))
                else:
                    cand = g(bound(gh + (reset * h) @ rh.transpose(0, 1) + bh))
                h_new = (1 - z) * cand + z * h
                c_new = c
            if valid is not None:
                h_new = torch.where(valid[t], h_new, h)
                c_new = torch.where(valid[t], c_new, c)
                out[t] = torch.where(valid[t], h_new, torch.zeros_like(h_new))
            else:
                out[t] = h_new
            h, c = h_new, c_new
        ys.append(torch.stack(out) if steps else X.new_zeros(0, batch, H))
        hs.append(h)
        cs.append(c)
    Y, Y_h, Y_c = torch.stack(ys, 1), torch.stack(hs), torch.stack(cs)
    if layout:
        Y, Y_h, Y_c = Y.permute(2, 0, 1, 3), Y_h.transpose(0, 1), Y_c.transpose(0, 1)
    return [Y, Y_h, Y_c] if kind == "LSTM" else [Y, Y_h]

"""The `examples:` epilogues of `lrpc --help` and its subcommands' help (compiler/cli.py)."""

EXAMPLES = """examples:
  lrpc compile model.onnx -o explained.onnx                       # composite EpsilonPlusFlat
  lrpc compile model.onnx --rule alpha1beta0 -o explained.onnx
  lrpc compile model.onnx --composite EpsilonGammaBox:low=-3,high=3 --target input -o explained.onnx
  lrpc compile model.onnx --composite EpsilonPlus --rule-map 'conv1=flat' 'fc*=epsilon:eps=0.25' -o e.onnx
  lrpc compile model.onnx --preprocess 'resize=224,224;mean=0.485,0.456,0.406;std=0.229,0.224,0.225' -o e.onnx
  lrpc compile model.onnx --rule epsilon --verify -o explained.onnx  # writes only when verify passes
  lrpc compile model.onnx --rule epsilon --format savedmodel -o explained_savedmodel  # TensorFlow
  lrpc compile autoencoder.onnx --output reconstruction --target all -o explained.onnx
  lrpc compile autoencoder.onnx --explain latent:3 -o explained.onnx
  lrpc inspect model.onnx --composite EpsilonPlusFlat
  lrpc inspect model.onnx --method guidedbackprop
  lrpc explain explained.onnx images/ -o heatmaps/
  lrpc verify explained.onnx --source model.onnx

then, with onnxruntime alone:
  outputs..., relevance = onnxruntime.InferenceSession("explained.onnx").run(None, {"input": x})
"""

EXPLAIN_EXAMPLES = """examples:
  lrpc explain digits_explained.onnx digits/ -o heatmaps/          # a folder of PNGs
  lrpc explain digits_explained.onnx digits/ -o heatmaps/ --overwrite  # again: replace heatmaps/ as a whole
  lrpc explain explained.onnx cat.jpg dog.png -o out/ \\
      --preprocess 'resize=224,224;mean=0.485,0.456,0.406;std=0.229,0.224,0.225'
  lrpc explain explained.onnx batch.npy -o out/ --style overlay --format json
  lrpc explain explained.onnx x.npy --target 3 -o out/               # a file compiled with --target input
  lrpc explain explained.onnx images/ -o out/ --ray --actors 4        # 4 onnxruntime sessions on a local Ray
  lrpc explain explained.onnx /nfs/images/ -o /nfs/out/ --ray --address HEAD:6379 --actors 32  # a Ray cluster

writes OUTDIR/NAME.png per sample (red: relevance for the explained class, blue: against it; the
colours are scaled to ±max|R| per picture) and OUTDIR/predictions.csv (input, source, index,
predicted, score, target, relevance_sum, heatmap). OUTDIR must be new or empty (else --overwrite) and
apart from the inputs; it appears complete or not at all, also when interrupted.

preprocessing SPEC (images only; .npy arrays are fed as they are), KEY=VALUE items joined by ';':
  resize=H,W   scale=1/255 (× the 0–255 pixels; default)   mean=…  std=…  (one value or one per channel)
  layout=NCHW|NHWC   color=gray|rgb   invert=1 (dark strokes on white → light on black)
  x = ((invert ? 255 − p : p) · scale − mean) / std; without --preprocess, the spec stored by
  `lrpc compile --preprocess`, else resize to the model input's size and scale=1/255.
"""

EXPORT_EXAMPLES = """examples:
  lrpc export triton explained.onnx --repo models --name digits --max-batch 32
  tritonserver --model-repository models          # then query it with tritonclient (see the README)
"""

BENCH_EXAMPLES = """examples:
  lrpc bench model.onnx --composite EpsilonPlusFlat --batch 1,16 --threads 2
  lrpc bench model.onnx --rule epsilon --no-memory --json bench.json
"""

VERIFY_EXAMPLES = """examples:
  lrpc verify explained.onnx                          # 4 random inputs
  lrpc verify explained.onnx --source model.onnx      # against a fresh compile of the source
  lrpc verify explained.onnx --inputs x.npy --tolerance 1e-4

checks, per sample:
  finite        no NaN or Inf in the outputs and relevance (onnxruntime, float32, as deployed)
  float64       max|R32 − R64| / max|R64| ≤ --tolerance, and the same for each model output. R64 comes
                from onnx's reference evaluator (numpy) running the file's own graph in double
                precision: this catches numerical trouble in float32, not a wrong rule, since the
                graph is the same. With --source, R64 comes from a fresh compile of the source model
                with the options the file records (its SHA-256 checked against lrpc.source_sha256):
                this catches any edit of the file.
  conservation  Σ relevance / S0, S0 the start relevance (the explained score). Judged (1 ± 1e-3)
                only where LRP conserves exactly: rule zero or epsilon (ε ≤ 1e-4) on a network with no
                bias; elsewhere reported. Not for gradient methods.
  source        (with --source) the source's SHA-256 is the one the file records.
exit status: 0 every check passed, 1 a check failed, 2 an error (unreadable file, bad option).
"""

namespace Harness.Executor.Training;

/// <summary>
/// Megatron's --check-for-nan-in-loss-and-grad (on by default; pretrain_gpt.py's loss_func validates the loss is neither
/// NaN nor Inf, fatally, and the DDP buffer checks the gradients; NVIDIA/Megatron-LM d98e8a6): a run whose loss, or whose
/// gradient norm, is not finite stops at that iteration, and its state is not saved, so the newest checkpoint is the last
/// good one. Under a loss scaler a non-finite gradient is the scaler's overflow signal, a skipped step and no error
/// (Megatron turns the check off under dynamic scaling for that reason); the loss, which the scaler does not touch, is still
/// checked. Every rank sees the same loss (averaged over replicas) and the same global norm, so every rank stops alike.
/// </summary>
public static class NanCheck
{
    /// <summary>What is not finite after a step (its loss, or without a loss scaler its gradient norm); null if nothing.</summary>
    public static string? Find(StepResult r) =>
        !float.IsFinite(r.Loss) ? $"loss is {Word(r.Loss)}"
        : r.LossScale is null && r.GradNorm is float g && !float.IsFinite(g) ? $"gradient norm is {Word(g)}"
        : null;

    private static string Word(float x) => float.IsNaN(x) ? "NaN" : x > 0 ? "Inf" : "-Inf";

    /// <summary>The one sentence: the iteration, what was not finite, and what was kept.</summary>
    public static string Sentence(long iteration, string what, string? save, long? lastSaved) =>
        $"iteration {iteration}'s {what}, so the run stopped there without saving it (--no-check-for-nan-in-loss-and-grad lets a run go on); " +
        (save is null ? "no --save was set." : lastSaved is long n ? $"the newest checkpoint in {save}, iteration {n}, is the last good one."
            : $"this run saved no checkpoint in {save}.");
}

/// <summary>A loss or gradient norm that is not finite, with <see cref="NanCheck"/>'s sentence.</summary>
public sealed class NonFiniteException(string message) : Exception(message);

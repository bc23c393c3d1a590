namespace Harness.Simulator.Specs;

/// <summary>
/// Whose kernels run the transformer: Megatron's --transformer-impl. The reproduced runs used Megatron-core with Transformer
/// Engine (its default); a run of this project's executor is costed with the kernels the executor itself launches, so that
/// `harness validate` sets the simulator beside the implementation that was measured rather than beside Megatron's.
/// </summary>
public enum TransformerImpl
{
    /// <summary>Megatron-core with Transformer Engine (--transformer-impl transformer_engine): Megatron's vocabulary-parallel
    /// cross-entropy in fp32 over the logits, Transformer Engine's rotary kernel over Q and K.</summary>
    TransformerEngine,
    /// <summary>Harness's executor (--transformer-impl harness): with its fused kernels on a GPU in bf16
    /// (<see cref="RunDescription.FusedKernels"/>), one pass over the bf16 logits for the cross-entropy's forward and one
    /// for its backward, the QKV projection split into Q, K and V with the rotary positions applied in one kernel, and
    /// attention's residual add fused with the RMSNorm after it; with the GPT path's kernels
    /// (<see cref="RunDescription.FusedGptKernels"/>), the residual add fused with the LayerNorm after it and the embedding
    /// with its learned positions added in the gather.</summary>
    Harness,
}

namespace Harness.Executor.Distributed;

/// <summary>Reduction of a collective; the values are NCCL's ncclRedOp_t codes (Avg is the sum over the group size).</summary>
public enum ReduceOp { Sum = 0, Max = 2, Min = 3, Avg = 4 }

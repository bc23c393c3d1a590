using Harness.Executor.Data;
using Harness.Simulator.Specs;

namespace Harness.Executor.Training.Records;

/// <summary>
/// What ran, apart from what it measured: the model as built (its tables padded as Megatron pads them), the
/// <see cref="RunDescription"/> as run (<see cref="ExecutorSupport.AsRun"/>) with a note per field the executor changed,
/// the settings, and where: the device, the libtorch that ran it, the parameters of rank 0's part of the model;
/// <see cref="SerialVocabSize"/>: the rows the serial model's tables get from the same flags (Megatron pads to a multiple of
/// 128·t, so a tensor-parallel run may hold more); <see cref="Data"/>: the blends of the data's shares, each dataset with its weight
/// and samples (empty for mock data).
/// </summary>
public sealed record RunRecord(ModelSpec Model, RunDescription Description, RunSettings Settings, IReadOnlyList<string> Notes,
    string Device, string Runtime, long Parameters, int SerialVocabSize, IReadOnlyList<BlendedSplit> Data)
{
    /// <summary>Whether the tables hold more rows than the serial model's: the extra padding rows take part in the softmax, so
    /// the losses differ from the serial run's by more than the layout's arithmetic (the rows both hold start equal: WeightInit).</summary>
    public bool PaddedBeyondSerial => Model.VocabSize != SerialVocabSize;

    /// <summary>MFU of <paramref name="tflopsPerGpu"/> model TFLOP/s against the GPU preset's dense bf16 peak; none on CPU,
    /// which has no such peak.</summary>
    public double? Mfu(double tflopsPerGpu) =>
        Settings.Device == ExecutionDevice.Cuda && GpuPresets.All.TryGetValue(Settings.Gpu, out var gpu) ? tflopsPerGpu * 1e12 / gpu.PeakBf16Flops : null;

    /// <summary>The device of every rank, as the records name it: "NVIDIA H100", or "4 x NVIDIA H100".</summary>
    public string Devices() => Description.WorldSize > 1 ? $"{Description.WorldSize} x {Device}" : Device;
}

using Harness.Executor.Autograd;
using Harness.Simulator.Costs;
using static TorchSharp.torch;

namespace Harness.Executor.Offload;

/// <summary>
/// Megatron-core's --cpu-offloading --cpu-offloading-num-layers N for one micro-batch's forward and backward: Transformer
/// Engine's cpu_offload_v1 (transformer_engine/pytorch/cpu_offload_v1.py, AsyncDoubleBufferGroupOffloadHandler, which
/// megatron/core/transformer/transformer_block.py enters with the model's layer count), one group per layer. The first N
/// layers' saved activations (<see cref="SavedActivations"/>, all of them: TE's hook takes every activation its modules mark,
/// whatever its size) go to the host one group at a time: group 0's copy starts once layer 0's forward is done, and group
/// g's memory is freed, and group g + 1's copy started, once the forward of layer layer_window_map[g] is done
/// (<see cref="CpuOffloading.Window"/>: the N copies spread over the L layers' compute). Backward mirrors it: once backward reaches layer
/// layer_window_map[g] group g's reload starts, and a layer's own group is back before its backward runs.
/// </summary>
public sealed class LayerOffloader : IDisposable
{
    private readonly int[] window;
    private readonly IHostLink link;
    private readonly SavedActivations?[] saved;
    private readonly ChunkOffload?[] groups;
    private readonly bool[] reloading;
    private readonly bool[] reloaded;
    private IDisposable? recording;
    private int freed;

    /// <param name="layers">The model's layers L.</param>
    /// <param name="offloaded">N, less than L.</param>
    public LayerOffloader(int layers, int offloaded, IHostLink link)
    {
        (window, this.link) = (Enumerable.Range(0, offloaded).Select(g => CpuOffloading.Window(layers, offloaded, g)).ToArray(), link);
        saved = new SavedActivations?[offloaded];
        groups = new ChunkOffload?[offloaded];
        reloading = new bool[offloaded];
        reloaded = new bool[offloaded];
    }

    private int Offloaded => groups.Length;

    /// <summary>Per offloaded layer, the bytes it saved and offloaded (all of them).</summary>
    public IEnumerable<OffloadRecord> Records(int microBatch) =>
        groups.Select((g, layer) => new OffloadRecord(microBatch, layer, g?.SavedBytes ?? 0, g?.OffloadedBytes ?? 0));

    /// <summary>At the input of layer <paramref name="layer"/> (the layer count: the final norm's input), where layer − 1's
    /// forward is done (TE's group commit); returns <paramref name="h"/>, marked so that backward calls back there.</summary>
    public Tensor AtLayerInput(Tensor h, int layer)
    {
        int done = layer - 1;
        if (recording is not null)
        {
            recording.Dispose();
            recording = null;
        }
        if (done == 0) Start(0);
        if (done >= 0 && freed < Offloaded && window[freed] == done)
        {
            groups[freed]!.End();
            if (++freed < Offloaded) Start(freed);
        }
        if (layer < Offloaded)
        {
            saved[layer] = new SavedActivations();
            recording = saved[layer]!.Record();
        }
        return done >= 0 ? GradReadyMarker.Apply(h, () => BeforeBackwardOf(done)) : h;
    }

    private void Start(int group)
    {
        groups[group] = new ChunkOffload(saved[group]!, 1, link, minBytes: 0);
        saved[group] = null;
    }

    /// <summary>Backward is about to enter layer <paramref name="layer"/>: at a window's layer, and at layer 0, the reloads
    /// under way are waited for, then the window's group is reloaded (on_group_commit_backward synchronizes both streams
    /// before bulk_reload_group, and at group 0 waits for the last). Between those points backward runs beside the copy: a
    /// layer's own group, reloaded at window[layer] &gt; layer, is back by the wait at window[layer − 1] ≥ layer. A wait is
    /// a fence on the whole copy stream, so one issued after the window's reload would wait for that copy too.</summary>
    private void BeforeBackwardOf(int layer)
    {
        bool windowLayer = Array.IndexOf(window, layer) >= 0;
        if (windowLayer || layer == 0)
            for (int g = Offloaded - 1; g >= 0; g--)
                if (reloading[g] && !reloaded[g])
                {
                    groups[g]!.EndReload();
                    reloaded[g] = true;
                }
        if (layer < Offloaded && !reloaded[layer])
            throw new InvalidOperationException($"layer {layer}'s offloaded activations are not back before its backward.");
        for (int g = Offloaded - 1; g >= 0; g--)
            if (window[g] == layer) BeginReload(g);
    }

    /// <summary>Each group's window is its own layer (window[g] rises with g), so each is reloaded once.</summary>
    private void BeginReload(int group)
    {
        reloading[group] = true;
        groups[group]!.BeginReload();
    }

    public void Dispose()
    {
        recording?.Dispose();
        foreach (var s in saved) s?.Dispose();
        foreach (var g in groups) g?.Dispose();
    }
}

namespace Harness.Simulator.Costs;

/// <summary>
/// Megatron-core's --cpu-offloading --cpu-offloading-num-layers N: Transformer Engine's cpu_offload_v1
/// (transformer_engine/pytorch/cpu_offload_v1.py, AsyncDoubleBufferGroupOffloadHandler, entered by
/// megatron/core/transformer/transformer_block.py with the model's L layers; Megatron-core refuses it with pipeline
/// parallelism and with recomputation, transformer_config.py). The first N layers' saved activations are copied to host
/// memory one layer at a time on a stream of their own and freed: layer 0's copy starts when its forward is done, and the
/// copy of layer g must be done, freeing it and starting layer g + 1's, when the forward of layer
/// <see cref="Window"/>(g) is done. A copy hides behind the forward of the layers of its window and the compute stream
/// waits for the rest. Backward mirrors it: layer g's reload runs over the backward of the same layers.
/// </summary>
public static class CpuOffloading
{
    /// <summary>TE's layer_window_map[g]: (L div N)·(g + 1) − 1, plus g + 1 for the first L mod N groups and L mod N after,
    /// so the N windows cover the L layers, the first L mod N one layer longer.</summary>
    public static int Window(int layers, int offloaded, int g) =>
        layers / offloaded * (g + 1) - 1 + Math.Min(g + 1, layers % offloaded);

    /// <summary>Seconds the compute stream waits in one forward (or backward) for the copies of <paramref name="offloaded"/>
    /// layers of <paramref name="layers"/>, each taking <paramref name="copySeconds"/> beside layers of
    /// <paramref name="layerSeconds"/> each: the copy of layer g overlaps the layers after the previous window's end up to its
    /// own (after layer 0 for the first).</summary>
    public static double Stall(int layers, int offloaded, double layerSeconds, double copySeconds)
    {
        double stall = 0;
        for (int g = 0, end = 0; g < offloaded; g++)
        {
            int window = Window(layers, offloaded, g);
            stall += Math.Max(0, copySeconds - (window - end) * layerSeconds);
            end = window;
        }
        return stall;
    }
}

using static TorchSharp.torch;

namespace Harness.Executor.Autograd;

/// <summary>
/// What a custom function's forward saved for backward, let go once its backward has run. libtorch frees a node's saved
/// tensors right after the node runs (Node::release_variables, called by the engine when the graph is not retained:
/// torch/csrc/autograd/engine.cpp; for custom functions CppNode::release_variables in custom_function.h), so a layer's
/// activations are returned as backward passes it. TorchSharp 0.107's custom functions keep their SavedVariables in the
/// node's context until the whole graph is freed (src/TorchSharp/AutogradFunction.cs: AutogradContext.Dispose, reached
/// from the node's deletion only). Every saved activation of every fused kernel and linear would then stay on the GPU through
/// the rest of backward, and an activation offload's reloaded layers with them, so offloading more layers would stop
/// lowering the peak. The executor never retains a graph for a second backward.
/// </summary>
public static class SavedTensors
{
    /// <summary>Releases <paramref name="ctx"/>'s saved tensors; returns <paramref name="gradients"/>.</summary>
    public static List<Tensor> Release(autograd.AutogradContext ctx, List<Tensor> gradients)
    {
        ctx.Dispose();
        return gradients;
    }
}

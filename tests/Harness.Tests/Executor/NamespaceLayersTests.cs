using System.Reflection;
using System.Reflection.Emit;
using Harness.Executor.Training;

namespace Harness.Tests.Executor;

/// <summary>
/// The executor's namespaces import only downward (DESIGN: Native -> Distributed -> the parallelisms and the model ->
/// Training; diagnostics beside). Read from the compiled assembly: every type's base, interfaces, fields, signatures
/// and the members its method bodies call, so a fully qualified name or a lambda counts as much as a using line.
/// </summary>
public class NamespaceLayersTests
{
    private const string Root = "Harness.Executor";

    /// <summary>Bottom up; a namespace may use its own layer's and lower layers' (sub-namespaces belong to their parent's layer).</summary>
    private static readonly string[][] Layers =
    [
        ["Native"],                                   // libtorch, CUDA, NVRTC bindings
        ["Autograd", "Data", "Distributed", "Offload"], // autograd helpers, datasets, communicators and process groups, activation offload
        ["Fused"],                                    // the executor's CUDA kernels and their autograd functions
        ["Optimizer", "TensorParallel", "Transformer", "ContextParallel", "DataParallel", "PipelineParallel"],
        ["Training"],                                 // one loop, checkpoints, records
    ];

    /// <summary>Beside the layers: they may use any of them, and nothing in the executor uses them.</summary>
    private static readonly string[] Beside = ["Diagnostics", "Calibration"];

    [Fact]
    public void TheNamespaceGraphIsAcyclicAndImportsOnlyDownward()
    {
        var graph = Dependencies();
        Assert.True(graph.Count >= 15, $"only {graph.Count} namespaces found: {string.Join(", ", graph.Keys)}");
        foreach (var ns in graph.Keys) Layer(ns);
        var wrong = new List<string>();
        foreach (var (from, tos) in graph)
            foreach (var to in tos)
            {
                if (Beside.Contains(Component(to)) && Component(from) != Component(to)) wrong.Add($"{from} -> {to} (uses a diagnostic)");
                else if (Layer(to) > Layer(from)) wrong.Add($"{from} -> {to} (upward)");
            }
        Assert.True(wrong.Count == 0, string.Join("\n", wrong));
        Assert.Null(Cycle(graph));
    }

    [Fact]
    public void TheCheckSeesACycle()
    {
        // The test's own machinery: a graph with a cycle is found to have one.
        var graph = new Dictionary<string, HashSet<string>> { ["a"] = ["b"], ["b"] = ["c"], ["c"] = ["a"], ["d"] = ["a"] };
        Assert.Equal(["a", "b", "c", "a"], Cycle(graph));
    }

    /// <summary>The first segment after Harness.Executor: Native.Cuda is Native.</summary>
    private static string Component(string ns) => ns[(Root.Length + 1)..].Split('.')[0];

    private static int Layer(string ns)
    {
        string c = Component(ns);
        if (Beside.Contains(c)) return Layers.Length;
        int layer = Array.FindIndex(Layers, l => l.Contains(c));
        Assert.True(layer >= 0, $"namespace {ns} is in no layer; place it in the test's Layers");
        return layer;
    }

    /// <summary>A cycle of the graph as its nodes (the first repeated at the end), or null when it has none.</summary>
    private static List<string>? Cycle(Dictionary<string, HashSet<string>> graph)
    {
        var state = new Dictionary<string, int>(); // 1: on the path, 2: done
        var path = new List<string>();
        List<string>? Visit(string node)
        {
            state[node] = 1;
            path.Add(node);
            foreach (var next in graph.GetValueOrDefault(node, []).Order(StringComparer.Ordinal))
            {
                if (state.GetValueOrDefault(next) == 1) return [.. path.Skip(path.IndexOf(next)), next];
                if (state.GetValueOrDefault(next) == 0 && Visit(next) is { } cycle) return cycle;
            }
            path.RemoveAt(path.Count - 1);
            state[node] = 2;
            return null;
        }
        foreach (var node in graph.Keys.Order(StringComparer.Ordinal))
            if (state.GetValueOrDefault(node) == 0 && Visit(node) is { } cycle) return cycle;
        return null;
    }

    /// <summary>For each executor namespace, the other executor namespaces its types use.</summary>
    private static Dictionary<string, HashSet<string>> Dependencies()
    {
        var assembly = typeof(ParallelTrainer).Assembly;
        var graph = new Dictionary<string, HashSet<string>>();
        const BindingFlags all = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;
        foreach (var type in assembly.GetTypes().Where(t => t.Namespace?.StartsWith(Root + ".") == true))
        {
            var used = graph.TryGetValue(type.Namespace!, out var set) ? set : graph[type.Namespace!] = [];
            var seen = new List<Type>();
            if (type.BaseType is { } b) seen.Add(b);
            seen.AddRange(type.GetInterfaces());
            seen.AddRange(type.GetFields(all).Select(f => f.FieldType));
            seen.AddRange(type.GetProperties(all).Select(p => p.PropertyType));
            foreach (var method in type.GetMethods(all).Cast<MethodBase>().Concat(type.GetConstructors(all)))
            {
                seen.AddRange(method.GetParameters().Select(p => p.ParameterType));
                if (method is MethodInfo mi) seen.Add(mi.ReturnType);
                if (method.GetMethodBody() is not { } body) continue;
                seen.AddRange(body.LocalVariables.Select(l => l.LocalType));
                seen.AddRange(BodyReferences(method, body.GetILAsByteArray() ?? []));
            }
            foreach (var ns in seen.SelectMany(Namespaces).Where(ns => ns.StartsWith(Root + ".") && ns != type.Namespace))
                used.Add(ns);
        }
        return graph;
    }

    /// <summary>The namespaces of a type and of its element and generic argument types.</summary>
    private static IEnumerable<string> Namespaces(Type t)
    {
        if (t.HasElementType) return Namespaces(t.GetElementType()!);
        var own = t.IsGenericParameter || t.Namespace is null ? [] : new[] { t.Namespace };
        return t.IsGenericType ? own.Concat(t.GetGenericArguments().SelectMany(Namespaces)) : own;
    }

    private static readonly Dictionary<short, OpCode> OpCodesByValue = typeof(OpCodes).GetFields(BindingFlags.Public | BindingFlags.Static)
        .Select(f => (OpCode)f.GetValue(null)!).ToDictionary(o => o.Value);

    /// <summary>The types a method body names: the declaring types of the members it calls or loads, and the types it names.</summary>
    private static IEnumerable<Type> BodyReferences(MethodBase method, byte[] il)
    {
        var typeArgs = method.DeclaringType!.IsGenericType ? method.DeclaringType.GetGenericArguments() : null;
        var methodArgs = method.IsGenericMethod ? method.GetGenericArguments() : null;
        for (int i = 0; i < il.Length;)
        {
            short value = il[i] == 0xFE ? (short)(0xFE00 | il[i + 1]) : il[i];
            var op = OpCodesByValue[value];
            i += op.Size;
            int operand = op.OperandType switch
            {
                OperandType.InlineNone => 0,
                OperandType.ShortInlineBrTarget or OperandType.ShortInlineI or OperandType.ShortInlineVar => 1,
                OperandType.InlineVar => 2,
                OperandType.InlineI8 or OperandType.InlineR => 8,
                OperandType.InlineSwitch => 4 + 4 * BitConverter.ToInt32(il, i),
                _ => 4,
            };
            if (op.OperandType is OperandType.InlineField or OperandType.InlineMethod or OperandType.InlineTok or OperandType.InlineType)
            {
                var member = method.Module.ResolveMember(BitConverter.ToInt32(il, i), typeArgs, methodArgs);
                if (member is Type t) yield return t;
                else if (member is not null)
                {
                    if (member.DeclaringType is { } declaring) yield return declaring;
                    if (member is MethodInfo { IsGenericMethod: true } generic)
                        foreach (var a in generic.GetGenericArguments()) yield return a;
                    if (member is FieldInfo f) yield return f.FieldType;
                }
            }
            i += operand;
        }
    }
}

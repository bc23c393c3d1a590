using System.Globalization;
using System.Text.RegularExpressions;

namespace Harness.Simulator.Specs;

/// <summary>A number as a command line writes it, for the sentences that name a flag's value: 1e-08 reads back as the -1e-8
/// the user typed, not .NET's "-1E-08".</summary>
public static partial class FlagText
{
    public static string Of(double x) =>
        Exponent().Replace(x.ToString("R", CultureInfo.InvariantCulture), m => $"e{(m.Groups[1].Value == "-" ? "-" : "")}{m.Groups[2].Value}");

    [GeneratedRegex(@"E([+-])0*(\d+)")]
    private static partial Regex Exponent();
}

// Placeholder translation unit so the CPU backend library always has a source.
namespace mlxcel::cpu {
int backend_version() { return 1; }
}  // namespace mlxcel::cpu

//! `kubectl-recur`: the kubectl plugin (`kubectl recur ...`); everything is in `recur::plugin`.
fn main() -> std::process::ExitCode {
    recur::plugin::main()
}

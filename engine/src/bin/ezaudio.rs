fn main() {
    eprintln!("ezaudio: not yet implemented");
    std::process::exit(2);
}

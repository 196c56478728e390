fn main() {
    println!("a WASI command, not a Switchboard plugin");
}

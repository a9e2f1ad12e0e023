fn main() {
    println!("dbus-modbus-client {}", env!("CARGO_PKG_VERSION"));
}

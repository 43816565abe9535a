pub mod image_io;

// Writes a SequenceFile with Hadoop's own SequenceFile.Writer (Text keys, BytesWritable
// values, uncompressed, with metadata), from the files given, keyed by their file names.
// Used by Strata's tests to show that Strata's reader reads what Hadoop writes.
//
//   java -cp CONF:JARS/* SeqWrite OUT FILE...
import java.nio.file.Files;
import java.nio.file.Paths;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.io.BytesWritable;
import org.apache.hadoop.io.SequenceFile;
import org.apache.hadoop.io.Text;

public class SeqWrite {
    public static void main(String[] args) throws Exception {
        Configuration conf = new Configuration();
        conf.set("io.serializations", "org.apache.hadoop.io.serializer.WritableSerialization");
        SequenceFile.Metadata meta = new SequenceFile.Metadata();
        meta.set(new Text("written.by"), new Text("hadoop"));
        // file:// with the raw local file system: no .crc side files.
        conf.set("fs.file.impl", "org.apache.hadoop.fs.RawLocalFileSystem");
        try (SequenceFile.Writer writer = SequenceFile.createWriter(conf,
                SequenceFile.Writer.file(new Path("file://" + args[0])),
                SequenceFile.Writer.keyClass(Text.class),
                SequenceFile.Writer.valueClass(BytesWritable.class),
                SequenceFile.Writer.compression(SequenceFile.CompressionType.NONE),
                SequenceFile.Writer.metadata(meta))) {
            for (int i = 1; i < args.length; i++) {
                byte[] bytes = Files.readAllBytes(Paths.get(args[i]));
                writer.append(new Text(Paths.get(args[i]).getFileName().toString()),
                        new BytesWritable(bytes));
            }
        }
    }
}
